package plugin_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ringwire/ringwire/plugin"
)

// soakMax bounds a soak run, whatever RINGWIRE_SOAK asks.
const soakMax = 10 * time.Minute

// TestSoak runs mixed traffic across several supervised plugins while
// plugins are killed at random and restarted, for RINGWIRE_SOAK (a
// duration, at most 10 minutes; CI runs 30s). It prints calls made, calls
// failed by cause, kills and restarts, the host's peak RSS and the leak
// counts, and fails if a call outlived its deadline by more than
// faultSlack, failed for a cause other than a plugin's death, or anything
// leaked.
func TestSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("RINGWIRE_SOAK"))
	if err != nil || d <= 0 {
		t.Skip("opt-in: set RINGWIRE_SOAK to a duration (e.g. 30s; at most 10m)")
	}
	d = min(d, soakMax)
	base := takeBaseline()
	const plugins = 4
	sessions := make([]*plugin.Client, plugins)
	for i := range sessions {
		cfg := pluginConfig("echo")
		cfg.Name = fmt.Sprintf("soak-%d", i)
		cfg.Mux = hostMux(nil)
		cfg.MaxRestarts = 1 << 20 // a long run kills often
		cfg.Backoff = 10 * time.Millisecond
		cfg.MaxBackoff = 100 * time.Millisecond
		cfg.HealthInterval = 200 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		var err error
		sessions[i], err = plugin.Launch(ctx, cfg)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	var (
		calls   atomic.Int64
		late    atomic.Int64
		mu      sync.Mutex
		causes  = map[string]int{}
		strange []error
		kills   atomic.Int64
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Traffic: 8 callers, each picking a plugin and a kind of call.
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
			big := bytes.Repeat([]byte("s"), 256<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := sessions[r.IntN(plugins)]
				deadline := time.Duration(50+r.IntN(450)) * time.Millisecond
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				start := time.Now()
				err := soakCall(ctx, r, s, big)
				took := time.Since(start)
				cancel()
				calls.Add(1)
				if took > deadline+faultSlack {
					late.Add(1)
				}
				if err != nil {
					cause, expected := soakCause(err)
					mu.Lock()
					causes[cause]++
					if !expected && len(strange) < 10 {
						strange = append(strange, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	// Faults: SIGKILL a random plugin every 100-500 ms.
	wg.Add(1)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(99, uint64(time.Now().UnixNano())))
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(100+r.IntN(400)) * time.Millisecond):
			}
			if pid := sessions[r.IntN(plugins)].Status().PID; pid > 0 {
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					kills.Add(1)
				}
			}
		}
	}()
	time.Sleep(d)
	close(stop)
	wg.Wait()
	restarts := 0
	for _, s := range sessions {
		restarts += s.Status().Restarts
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := s.Stop(ctx); err != nil && !errors.Is(err, plugin.ErrKilled) {
			t.Errorf("stop %s: %v", s.Status().State, err)
		}
		cancel()
	}
	checkLeaks(t, base)
	now := takeBaseline()

	keys := make([]string, 0, len(causes))
	failed := 0
	for k, n := range causes {
		keys = append(keys, fmt.Sprintf("%s %d", k, n))
		failed += n
	}
	sort.Strings(keys)
	report := fmt.Sprintf("soak %v, %d plugins: %d calls, %d failed (%s), %d returned past deadline+%v; %d kills, %d restarts; host peak RSS %s; leaks: descriptors %+d, ring mappings %+d, goroutines %+d, zombies %d",
		d, plugins, calls.Load(), failed, strings.Join(keys, ", "), late.Load(), faultSlack,
		kills.Load(), restarts, peakRSS(), now.fds-base.fds, now.maps-base.maps, now.goroutines-base.goroutines, len(zombies()))
	t.Log(report)
	fmt.Println(report)
	if late.Load() > 0 {
		t.Errorf("%d calls returned later than their deadline plus %v", late.Load(), faultSlack)
	}
	if len(strange) > 0 {
		t.Errorf("calls failed for causes other than a plugin's death or their deadline: %v", strange)
	}
	if calls.Load() == 0 || kills.Load() == 0 {
		t.Errorf("nothing happened: %d calls, %d kills", calls.Load(), kills.Load())
	}
}

// soakCall makes one call of a random kind.
func soakCall(ctx context.Context, r *rand.Rand, s *plugin.Client, big []byte) error {
	switch r.IntN(6) {
	case 0:
		_, err := s.Call(ctx, "echo", big[:r.IntN(len(big))])
		return err
	case 1:
		out, err := s.Call(ctx, "callback", []byte("cb"))
		if err == nil && string(out) != "host:cb" {
			return fmt.Errorf("callback answered %q", out)
		}
		return err
	case 2:
		h, err := s.New(ctx, "counter", nil)
		if err != nil {
			return err
		}
		if _, err := h.Call(ctx, "add", nil); err != nil {
			return err
		}
		return h.Destroy(ctx)
	case 3:
		// Longer than many deadlines: cancellation crosses to the plugin.
		_, err := s.Call(ctx, "sleep", []byte("100"))
		return err
	case 4:
		var n atomic.Int64
		cctx := plugin.WithCallback(ctx, func(context.Context, []byte) ([]byte, error) {
			n.Add(1)
			return nil, nil
		})
		_, err := s.Call(cctx, "scan", []byte("a b c d"))
		return err
	default:
		_, err := s.Call(ctx, "echo", []byte("small"))
		return err
	}
}

// soakCause names why a call failed, and whether that is a cause the soak
// expects (a plugin killed or restarting, a deadline).
func soakCause(err error) (string, bool) {
	var pe *plugin.Error
	switch {
	case errors.Is(err, plugin.ErrPluginRestarted):
		return "restarted mid-call", true
	case errors.Is(err, plugin.ErrUnavailable):
		return "unavailable (restarting)", true
	case errors.Is(err, plugin.ErrPeerGone):
		return "peer gone", true
	case errors.Is(err, context.DeadlineExceeded):
		return "deadline", true
	case errors.As(err, &pe) && pe.Code == plugin.CodeDeadlineExceeded:
		return "deadline (plugin side)", true
	case errors.As(err, &pe) && pe.Code == plugin.CodeNotFound:
		return "object gone with its plugin", true
	}
	return "other", false
}

// peakRSS is the host process's peak resident set (VmHWM).
func peakRSS() string {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:"))
		}
	}
	return "?"
}
