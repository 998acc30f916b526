package shm_test

import (
	"fmt"
	"net"
	"os"

	"github.com/ringwire/ringwire/shm"
	"golang.org/x/sys/unix"
)

func ExampleCreate() {
	seg, err := shm.Create(1 << 16) // a multiple of every page size
	if err != nil {
		fmt.Println(err)
		return
	}
	defer seg.Close()

	copy(seg.Bytes(), "hello, shared memory")
	fmt.Println(seg.Size(), len(seg.Bytes()))
	fmt.Println(string(seg.Bytes()[:5]))
	// Output:
	// 65536 65536
	// hello
}

// unixPair returns a connected pair of Unix stream sockets.
func unixPair() (*net.UnixConn, *net.UnixConn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var conns [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f) // dups fd
		f.Close()
		if err != nil {
			return nil, nil, err
		}
		conns[i] = c.(*net.UnixConn)
	}
	return conns[0], conns[1], nil
}

func ExampleSendFds() {
	server, client, err := unixPair()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer server.Close()
	defer client.Close()

	// The server creates a sealed segment and sends its descriptor.
	const size = 1 << 16
	seg, err := shm.Create(size)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer seg.Close()
	copy(seg.Bytes(), "written by the server")
	if err := shm.SendFds(server, []byte("ring"), seg.Fd()); err != nil {
		fmt.Println(err)
		return
	}

	// The client receives it, verifies size and seals, and maps it.
	buf := make([]byte, 16)
	n, fds, err := shm.RecvFds(client, buf, 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("message %q with %d descriptor\n", buf[:n], len(fds))
	peer, err := shm.Open(fds[0], size) // takes ownership of fds[0]
	if err != nil {
		fmt.Println(err)
		return
	}
	defer peer.Close()
	fmt.Println(string(peer.Bytes()[:21]))

	// Both sides see the same memory.
	copy(peer.Bytes()[100:], "client")
	fmt.Println(string(seg.Bytes()[100:106]))
	// Output:
	// message "ring" with 1 descriptor
	// written by the server
	// client
}
