package plugin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
)

// verifiedBinary opens c.Path and, if c.SHA256 is set, checks the file's
// SHA-256 against it. On Linux the process is then started from the opened
// file itself (/proc/self/fd), so the binary cannot be swapped between the
// check and the start; elsewhere it is started by path. The returned file
// (nil without SHA256) must stay open until the process has started.
func (c *Config) verifiedBinary(cmd *exec.Cmd) (*os.File, error) {
	if len(c.SHA256) == 0 {
		return nil, nil
	}
	f, err := os.Open(c.Path)
	if err != nil {
		return nil, errorf(c.Name, ErrConfig, err, "cannot check the binary")
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return nil, errorf(c.Name, ErrConfig, err, "cannot check the binary")
	}
	if sum := h.Sum(nil); !bytes.Equal(sum, c.SHA256) {
		f.Close()
		return nil, errorf(c.Name, ErrUnauthorized, nil, "%s has SHA-256 %s, the host requires %s",
			c.Path, hex.EncodeToString(sum), hex.EncodeToString(c.SHA256))
	}
	if runtime.GOOS == "linux" {
		// exec resolves the path before close-on-exec closes the file.
		cmd.Path = fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	}
	return f, nil
}
