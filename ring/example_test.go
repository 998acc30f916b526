package ring_test

import (
	"fmt"

	"github.com/ringwire/ringwire/ring"
)

// The zero-copy path: reserve space, fill it in place, commit; several commits
// are published together by one Flush. The consumer reads records in place and
// releases them.
func Example() {
	mem, err := ring.NewHeap(4096, 0) // in production: a shm.Segment's bytes
	if err != nil {
		panic(err)
	}
	p, _ := ring.NewProducer(mem, nil)
	c, _ := ring.NewConsumer(mem, nil)

	for i, word := range []string{"hello", "shared", "memory"} {
		buf, err := p.Reserve(len(word))
		if err != nil {
			panic(err)
		}
		n := copy(buf, word)
		_ = p.Commit(uint16(i), n)
	}
	p.Flush() // one store of the tail publishes all three

	for range 3 {
		r, err := c.Peek()
		if err != nil {
			panic(err)
		}
		fmt.Printf("type %d: %s\n", r.Type, r.Data)
		_ = c.Release()
	}
	// Output:
	// type 0: hello
	// type 1: shared
	// type 2: memory
}

// Messages larger than a record are fragmented by Write and reassembled by
// the consumer; here a 10 KiB message crosses a 4 KiB ring.
func ExampleProducer_Write() {
	mem, _ := ring.NewHeap(4096, 0)
	p, _ := ring.NewProducer(mem, nil)
	c, _ := ring.NewConsumer(mem, nil)

	msg := make([]byte, 10<<10)
	done := make(chan error)
	go func() { done <- p.Write(7, msg) }()

	buf := make([]byte, 16<<10)
	typ, n, err := c.Read(buf)
	fmt.Println(typ, n, err, <-done)
	fmt.Println("max record:", p.MaxRecord())
	// Output:
	// 7 10240 <nil> <nil>
	// max record: 2040
}
