package transport

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Listener floods (issue: "listeners that no unauthenticated client can
// exhaust"). Strangers connect from many loopback addresses (all of
// 127.0.0.0/8 is loopback) and hold their connections silent, dribble bytes
// (slowloris) or send garbage, reconnecting whenever the listener closes
// them, while honest clients connect throughout, some from the attackers'
// own addresses (one machine, or a NAT). Every honest client gets in, each
// within floodHonestBound.

const (
	floodSources     = 64 // attacking addresses
	floodPerSource   = 16 // silent connections held per address
	floodSlowloris   = 32
	floodGarbage     = 32
	floodHonest      = 24
	floodDuration    = 8 * time.Second // the attack stops by then, whatever happens
	floodHonestBound = 1500 * time.Millisecond
)

// floodMix is how many strangers of each kind attack.
type floodMix struct{ sources, perSource, slowloris, garbage int }

var floodFull = floodMix{floodSources, floodPerSource, floodSlowloris, floodGarbage}

// floodAttack runs the strangers until stop; dial makes one connection from
// source i. Wait on the result for every attacker to end.
func floodAttack(mix floodMix, stop <-chan struct{}, dial func(i int) (net.Conn, error), opened *atomic.Int64) *sync.WaitGroup {
	var wg sync.WaitGroup
	run := func(i int, behave func(nc net.Conn) bool) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				nc, err := dial(i)
				if err != nil {
					select {
					case <-stop:
						return
					case <-time.After(10 * time.Millisecond):
					}
					continue
				}
				opened.Add(1)
				done := make(chan struct{})
				go func() {
					select {
					case <-stop:
					case <-done:
					}
					nc.Close()
				}()
				behave(nc)
				close(done)
			}
		}()
	}
	silent := func(nc net.Conn) bool {
		// Hold it until the listener closes it (or the attack ends).
		_, err := nc.Read(make([]byte, 1))
		return err == nil
	}
	slow := func(nc net.Conn) bool {
		for {
			if _, err := nc.Write([]byte{'R'}); err != nil {
				return false
			}
			select {
			case <-stop:
				return false
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	garbage := func(nc net.Conn) bool {
		b := make([]byte, 512)
		for range 100 {
			rand.Read(b)
			if _, err := nc.Write(b); err != nil {
				return false
			}
		}
		_, _ = nc.Read(b)
		return false
	}
	for i := range mix.sources {
		for range mix.perSource {
			run(i, silent)
		}
	}
	for i := range mix.slowloris {
		run(i%8, slow)
	}
	for i := range mix.garbage {
		run(8+i%8, garbage)
	}
	return &wg
}

// floodHonestClients connects floodHonest clients one after the other with
// connect(i) while the attack runs, and checks that each one gets in within
// floodHonestBound. It returns the latencies.
func floodHonestClients(t *testing.T, l *Listener, connect func(ctx context.Context, i int) (Conn, error)) []time.Duration {
	t.Helper()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	var lat []time.Duration
	for i := range floodHonest {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		start := time.Now()
		c, err := connect(ctx, i)
		d := time.Since(start)
		cancel()
		if err != nil {
			t.Errorf("honest client %d: %v after %v", i, err, d)
			continue
		}
		c.Close()
		lat = append(lat, d)
		if d > floodHonestBound {
			t.Errorf("honest client %d got in after %v, more than %v", i, d, floodHonestBound)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return lat
}

// floodReport logs what a flood did; with wantDisplaced it checks that the
// strangers filled the budget (some were displaced since before).
func floodReport(t *testing.T, l *Listener, lat []time.Duration, opened int64, before int, wantDisplaced bool) {
	t.Helper()
	slices.Sort(lat)
	displaced := floodDisplaced(l) - before
	if len(lat) > 0 {
		t.Logf("%d honest clients got in: median %v, worst %v; %d strangers' connections opened (-1: by a child), %d displaced",
			len(lat), lat[len(lat)/2], lat[len(lat)-1], opened, displaced)
	}
	if wantDisplaced && displaced == 0 {
		t.Errorf("no stranger was displaced: the flood never filled the budget")
	}
}

func floodDisplaced(l *Listener) int {
	l.adm.mu.Lock()
	defer l.adm.mu.Unlock()
	return l.adm.displaced
}

func TestListenerFloodTCP(t *testing.T) {
	sc, err := ca(t).ServerConfig("host", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen("tcp", "127.0.0.1:0", &Config{TLS: sc, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	source := func(i int) net.IP { return net.IPv4(127, 0, 1, byte(10+i)) }
	stop := make(chan struct{})
	var opened atomic.Int64
	wg := floodAttack(floodFull, stop, func(i int) (net.Conn, error) {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: source(i)}, Timeout: time.Second}
		return d.Dial("tcp", addr)
	}, &opened)
	timer := time.AfterFunc(floodDuration, func() { close(stop) })
	defer func() {
		if timer.Stop() {
			close(stop)
		}
		wg.Wait()
	}()
	time.Sleep(500 * time.Millisecond) // the strangers fill the budget
	cc, err := ca(t).ClientConfig("plugin", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	lat := floodHonestClients(t, l, func(ctx context.Context, i int) (Conn, error) {
		// Every other one from an attacker's address (a NAT).
		ip := net.IPv4(127, 0, 0, 1)
		if i%2 == 1 {
			ip = source(i % floodSources)
		}
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}}
		nc, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return Client(ctx, tls.Client(nc, cc), &Config{TLS: cc, Logger: quietLogger})
	})
	floodReport(t, l, lat, opened.Load(), 0, true)
}

// TestListenerFloodUnix: on a Unix socket a source is a uid. Strangers of
// another (allowed) uid, silent, slowloris and garbage, from a child process
// running as that uid; and, as the issue found, a thousand idle connections
// of our own uid. Honest plugins (our uid) get in throughout.
//
// A peer of our own uid that keeps opening talking connections as fast as
// it can competes with our plugins for the per-uid handshake slots; it is
// the same principal as the host (it could signal or trace it), so that is
// not tested as an attack.
func TestListenerFloodUnix(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run the attacker as another uid")
	}
	// A directory the attacker's uid can reach (t.TempDir's parent is 0700).
	dir, err := os.MkdirTemp("", "ringwire-flood-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "flood.sock")
	l, err := Listen("unix", path, &Config{Token: []byte("secret"), AllowUIDs: []int{floodUID}, Logger: quietLogger})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := os.Chmod(path, 0o777); err != nil {
		t.Fatal(err)
	}
	t.Run("other-uid", func(t *testing.T) {
		child := startChild(t, childSpec{Role: "rawflood", Network: "unix", Addr: path, UID: strconv.Itoa(floodUID)})
		if line := child.line(10 * time.Second); line != "flooding" {
			t.Fatalf("the attacker did not start: %q", line)
		}
		time.Sleep(500 * time.Millisecond)
		before := floodDisplaced(l)
		lat := floodHonestClients(t, l, func(ctx context.Context, i int) (Conn, error) {
			return Dial(ctx, "unix", path, &Config{Token: []byte("secret"), Name: fmt.Sprintf("plugin-%d", i), Logger: quietLogger})
		})
		floodReport(t, l, lat, -1, before, true)
		if err := child.wait(floodDuration + 10*time.Second); err != nil {
			t.Errorf("the attacker: %v", err)
		}
	})
	t.Run("same-uid-idle", func(t *testing.T) {
		stop := make(chan struct{})
		var opened atomic.Int64
		wg := floodAttack(floodMix{sources: 1, perSource: 1000}, stop, func(int) (net.Conn, error) {
			return net.DialTimeout("unix", path, time.Second)
		}, &opened)
		defer func() { close(stop); wg.Wait() }()
		time.Sleep(500 * time.Millisecond)
		before := floodDisplaced(l)
		lat := floodHonestClients(t, l, func(ctx context.Context, i int) (Conn, error) {
			return Dial(ctx, "unix", path, &Config{Token: []byte("secret"), Name: fmt.Sprintf("plugin-%d", i), Logger: quietLogger})
		})
		// A thousand idle connections fit the silent pool: nobody need be
		// displaced, and none stands in the plugins' way.
		floodReport(t, l, lat, opened.Load(), before, false)
	})
}

// floodUID is the attacker's uid in TestListenerFloodUnix (nobody).
const floodUID = 65534

// floodChild is the attacker process of TestListenerFloodUnix: the full
// mix against the Unix socket at childAddrEnv for floodDuration.
func floodChild() int {
	stop := make(chan struct{})
	var opened atomic.Int64
	addr := os.Getenv(childAddrEnv)
	wg := floodAttack(floodFull, stop, func(int) (net.Conn, error) {
		return net.DialTimeout("unix", addr, time.Second)
	}, &opened)
	fmt.Println("flooding")
	time.Sleep(floodDuration - time.Second)
	close(stop)
	wg.Wait()
	fmt.Fprintf(os.Stderr, "attacker: %d connections opened\n", opened.Load())
	return 0
}

func init() {
	childRoles["rawflood"] = func(Conn, error) int { return floodChild() }
}
