//go:build !linux

package duplex

import (
	"encoding/binary"
	"net"
	"os"

	"github.com/ringwire/ringwire/shm"
)

var le = binary.LittleEndian

func closeFd(int) error { return shm.ErrUnsupported }

func socketPair() (*net.UnixConn, *os.File, error) { return nil, nil, shm.ErrUnsupported }
