package handshake_test

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/ringwire/ringwire/internal/handshake"
)

// The listener decides on a dialler's Hello; the dialler checks the result.
func ExampleSelect() {
	policy := &handshake.Policy{
		Shm:          false, // e.g. a TCP listener
		Compressions: []handshake.Compression{handshake.CompressionZstd, handshake.CompressionLZ4},
		MaxMessage:   16 << 20,
		Contract:     []byte{0xc0, 0xff, 0xee},
		Token:        []byte("token-from-the-environment"),
		Name:         "host",
		Version:      "1.4.0",
	}
	hello := &handshake.Hello{
		MinVersion: 1, MaxVersion: 1,
		Shm:          true,
		Compressions: []handshake.Compression{handshake.CompressionLZ4},
		Contract:     []byte{0xc0, 0xff, 0xee},
		Token:        []byte("token-from-the-environment"),
		Name:         "plugin",
	}
	accept, refuse := handshake.Select(policy, hello)
	if refuse != nil {
		fmt.Println(refuse.Err())
		return
	}
	fmt.Println(accept.Transport, accept.Compression, accept.MaxMessage, accept.Name)
	fmt.Println("dialler's check:", handshake.Check(hello, accept))

	// A dialler built against another contract is refused, and the error
	// names both contract hashes.
	hello.Contract = []byte{0xba, 0xd0}
	_, refuse = handshake.Select(policy, hello)
	err := refuse.Err()
	fmt.Println(errors.Is(err, handshake.ErrContractMismatch))
	fmt.Println(err)
	// Output:
	// framed lz4 16777216 host
	// dialler's check: <nil>
	// true
	// negotiate: contract mismatch: dialler contract bad0, listener contract c0ffee
}

// Handshake messages travel with an 8-byte prefix; ReadMessage bounds the
// declared length before reading and decodes defensively.
func ExampleWriteMessage() {
	var conn bytes.Buffer // stands in for a net.Conn
	hello := &handshake.Hello{MinVersion: 1, MaxVersion: 1, Name: "plugin"}
	if err := handshake.WriteMessage(&conn, hello); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("prefix %q\n", conn.Bytes()[:4])

	m, err := handshake.ReadMessage(&conn)
	if err != nil {
		fmt.Println(err)
		return
	}
	switch m := m.(type) {
	case *handshake.Hello:
		fmt.Println("hello from", m.Name)
	case *handshake.Refuse:
		fmt.Println("refused:", m.Err())
	}

	// Anything else on the wire is ErrMalformed.
	_, err = handshake.ReadMessage(bytes.NewReader([]byte("GET / HTTP/1.1\r\n")))
	fmt.Println(errors.Is(err, handshake.ErrMalformed))
	// Output:
	// prefix "RWH1"
	// hello from plugin
	// true
}
