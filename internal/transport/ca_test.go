package transport

import (
	"sync"
	"testing"
)

var (
	testCAOnce sync.Once
	testCA     *CA
	testCAErr  error
)

// ca is the tests' certificate authority, made once per test binary.
func ca(t testing.TB) *CA {
	testCAOnce.Do(func() { testCA, testCAErr = NewCA("ringwire test CA") })
	if testCAErr != nil {
		t.Fatal(testCAErr)
	}
	return testCA
}
