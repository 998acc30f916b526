package probe

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Workloads of the tests, and of the child's 'w' and 's' rounds.

// From linux/futex.h.
const (
	futexWaitPrivate = 0 | 128
	futexWakePrivate = futexWake | 128
)

// kindCall makes one system call of a kind that Counts counts.
type kindCall struct {
	name string
	call func()
	of   func(Counts) uint64
}

// kindCalls returns a kindCall for each kind but futex (TestFutexWake's),
// and a function that frees what they use.
func kindCalls() ([]kindCall, func(), error) {
	var fds []int
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	null, err := unix.Open("/dev/null", unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	fds = append(fds, null)
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	fds = append(fds, pair[0], pair[1])
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	fds = append(fds, ep)

	one, buf, events := []byte{1}, make([]byte, 1), make([]unix.EpollEvent, 1)
	sent := false
	return []kindCall{
		{"write", func() { unix.Write(null, one) }, func(c Counts) uint64 { return c.ReadWrite }},
		// A datagram sent, then received: one call each time.
		{"sendmsg/recvmsg", func() {
			if sent {
				unix.Recvmsg(pair[1], buf, nil, 0)
			} else {
				unix.Sendmsg(pair[0], one, nil, nil, 0)
			}
			sent = !sent
		}, func(c Counts) uint64 { return c.SendRecv }},
		{"epoll_wait", func() { unix.EpollWait(ep, events, 0) }, func(c Counts) uint64 { return c.Epoll }},
		{"poll", func() { unix.Poll(nil, 0) }, func(c Counts) uint64 { return c.Poll }},
		{"sched_yield", func() { unix.Syscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }, func(c Counts) uint64 { return c.SchedYield }},
	}, closeAll, nil
}

// futex makes a futex(2) call on addr with no timeout or a relative one.
func futex(addr *atomic.Uint32, op int, val uint32, timeout *unix.Timespec) {
	unix.Syscall6(unix.SYS_FUTEX, uintptr(unsafe.Pointer(addr)), uintptr(op), uintptr(val),
		uintptr(unsafe.Pointer(timeout)), 0, 0)
}

// pingPong has two goroutines, each locked to its OS thread and both
// threads to one CPU, pass a turn to each other rounds times through a
// futex word: each sleeps in FUTEX_WAIT until the other hands it the turn
// and FUTEX_WAKEs it. On one CPU the thread handed the turn is not
// running: it sleeps and is woken, or the other's wake-up preempted it,
// so each round has a wake-up or two. (On two CPUs both may spin through
// rounds on EAGAIN without sleeping.) It returns the rounds played, fewer
// if limit passed first, or an error if the threads could not be pinned.
func pingPong(rounds int, limit time.Duration) (int, error) {
	const over = 2
	var (
		turn     atomic.Uint32 // 0 or 1: whose turn; over
		played   int
		wg       sync.WaitGroup
		deadline = time.Now().Add(limit)
		cpu      unix.CPUSet
		pinErr   [2]error
	)
	if err := unix.SchedGetaffinity(0, &cpu); err != nil {
		return 0, fmt.Errorf("sched_getaffinity: %w", err)
	}
	for i := range 1024 {
		if cpu.IsSet(i) {
			cpu.Zero()
			cpu.Set(i)
			break
		}
	}
	end := func() {
		turn.Store(over)
		futex(&turn, futexWakePrivate, 1, nil)
	}
	player := func(me uint32) {
		defer wg.Done()
		// Never unlocked: the thread, pinned, exits with the goroutine.
		runtime.LockOSThread()
		if err := unix.SchedSetaffinity(0, &cpu); err != nil {
			pinErr[me] = fmt.Errorf("sched_setaffinity: %w", err)
			end()
			return
		}
		wait := unix.NsecToTimespec((10 * time.Millisecond).Nanoseconds())
		for {
			for v := turn.Load(); v != me; v = turn.Load() {
				if v == over {
					return
				}
				if time.Now().After(deadline) {
					end()
					return
				}
				futex(&turn, futexWaitPrivate, v, &wait)
			}
			if me == 0 {
				if played == rounds {
					end()
					return
				}
				played++
			}
			turn.Store(1 - me)
			futex(&turn, futexWakePrivate, 1, nil)
		}
	}
	wg.Add(2)
	go player(0)
	go player(1)
	wg.Wait()
	return played, errors.Join(pinErr[:]...)
}

// spinners has more goroutines than there are CPUs, each on its own OS
// thread, burn CPU without a system call for d, so that the kernel must
// preempt them to share the CPUs.
func spinners(d time.Duration) {
	n := runtime.NumCPU() + 1
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(n + 1))
	var wg sync.WaitGroup
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < d {
			}
		}()
	}
	wg.Wait()
}

// The child's 'w' round.
const (
	workCalls  = 2000 // of each kindCall
	workRounds = 500  // of pingPong
	workSpin   = 150 * time.Millisecond
)

// childWork makes workCalls calls of each kind, plays workRounds rounds of
// ping-pong and spins for workSpin.
func childWork() error {
	calls, closeAll, err := kindCalls()
	if err != nil {
		return err
	}
	defer closeAll()
	for _, k := range calls {
		for i := range workCalls {
			k.call()
			yieldEvery(i)
		}
	}
	played, err := pingPong(workRounds, 5*time.Second)
	if err != nil {
		return err
	}
	if played < workRounds {
		return fmt.Errorf("ping-pong: %d rounds of %d in 5s", played, workRounds)
	}
	spinners(workSpin)
	return nil
}

// The child's 's' round: sleepRounds sleeps of a millisecond (over 200ms,
// which TestSleeperNotPreempted counts on). Run in a
// child with GOMAXPROCS=1, time.Sleep has the Go runtime leave one thread
// asleep in epoll_pwait until the timer is due and no other: with a spare
// P it would wake another thread to look for work each time the sleeper
// woke (and that thread would often preempt the one that woke it), and
// with a sleep in a system call sysmon would hand the P to another thread.
const sleepRounds = 200

func childSleep() {
	for range sleepRounds {
		time.Sleep(time.Millisecond)
	}
}
