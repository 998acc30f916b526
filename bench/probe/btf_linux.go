package probe

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf/btf"
)

// kernelLayout is what the programs need to know of this kernel's types,
// from its BTF (/sys/kernel/btf/vmlinux).
type kernelLayout struct {
	pidOff, tgidOff int32 // of task_struct.pid and .tgid, both pid_t
	// The raw sched_switch argument that is prev_state (5.18+), or -1.
	prevStateArg int
}

var (
	layoutOnce sync.Once
	layout     kernelLayout
	layoutErr  error
)

// loadLayout reads the layout once per process: the kernel's BTF does not
// change, and parsing it costs milliseconds and megabytes that are freed
// when it returns.
func loadLayout() (kernelLayout, error) {
	layoutOnce.Do(func() { layout, layoutErr = readLayout() })
	return layout, layoutErr
}

func readLayout() (kernelLayout, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return kernelLayout{}, fmt.Errorf("load kernel BTF: %w", err)
	}
	var task *btf.Struct
	if err := spec.TypeByName("task_struct", &task); err != nil {
		return kernelLayout{}, fmt.Errorf("kernel BTF: %w", err)
	}
	l := kernelLayout{prevStateArg: -1}
	for _, f := range []struct {
		name string
		off  *int32
	}{{"pid", &l.pidOff}, {"tgid", &l.tgidOff}} {
		off, err := memberOffset(task.Members, f.name, 4)
		if err != nil {
			return kernelLayout{}, fmt.Errorf("kernel BTF: task_struct: %w", err)
		}
		*f.off = off
	}
	// The programs read raw arguments by position, so check them.
	//
	//	typedef void (*btf_trace_sched_wakeup)(void *__data, struct task_struct *p);
	//	typedef void (*btf_trace_sched_switch)(void *__data, bool preempt,
	//		struct task_struct *prev, struct task_struct *next, unsigned int prev_state);
	//
	// BTF has no names for these parameters; their types must do. prev_state
	// came in 5.18.
	wakeup, err := tracepointParams(spec, "sched_wakeup")
	if err != nil {
		return kernelLayout{}, err
	}
	if len(wakeup) != 1 || !isTaskPtr(wakeup[0]) {
		return kernelLayout{}, fmt.Errorf("kernel BTF: sched_wakeup has arguments %v, want (struct task_struct *)", wakeup)
	}
	sw, err := tracepointParams(spec, "sched_switch")
	if err != nil {
		return kernelLayout{}, err
	}
	if len(sw) < 3 || !isIntOfSize(sw[0], 1) || !isTaskPtr(sw[1]) || !isTaskPtr(sw[2]) {
		return kernelLayout{}, fmt.Errorf("kernel BTF: sched_switch has arguments %v, want (bool, struct task_struct *, struct task_struct *, ...)", sw)
	}
	if len(sw) == 4 && isIntOfSize(sw[3], 4) {
		l.prevStateArg = 3
	}
	return l, nil
}

// tracepointParams returns the types of the raw arguments of the
// tracepoint tp: the parameters of btf_trace_<tp> after __data.
func tracepointParams(spec *btf.Spec, tp string) ([]btf.Type, error) {
	var td *btf.Typedef
	if err := spec.TypeByName("btf_trace_"+tp, &td); err != nil {
		return nil, fmt.Errorf("kernel BTF: %w", err)
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return nil, fmt.Errorf("kernel BTF: btf_trace_%s is %v", tp, td.Type)
	}
	proto, ok := ptr.Target.(*btf.FuncProto)
	if !ok || len(proto.Params) == 0 {
		return nil, fmt.Errorf("kernel BTF: btf_trace_%s points to %v", tp, ptr.Target)
	}
	var types []btf.Type
	for _, p := range proto.Params[1:] {
		types = append(types, p.Type)
	}
	return types, nil
}

func isTaskPtr(t btf.Type) bool {
	ptr, ok := btf.UnderlyingType(t).(*btf.Pointer)
	if !ok {
		return false
	}
	s, ok := btf.UnderlyingType(ptr.Target).(*btf.Struct)
	return ok && s.Name == "task_struct"
}

func isIntOfSize(t btf.Type, size uint32) bool {
	i, ok := btf.UnderlyingType(t).(*btf.Int)
	return ok && i.Size == size
}

// memberOffset returns the byte offset of the member name, looking into
// anonymous structs and unions, and checks that it is size bytes long.
func memberOffset(members []btf.Member, name string, size int) (int32, error) {
	for _, m := range members {
		if m.Name == "" {
			var inner []btf.Member
			switch t := btf.UnderlyingType(m.Type).(type) {
			case *btf.Struct:
				inner = t.Members
			case *btf.Union:
				inner = t.Members
			}
			if off, err := memberOffset(inner, name, size); err == nil {
				return int32(m.Offset.Bytes()) + off, nil
			}
			continue
		}
		if m.Name != name {
			continue
		}
		if m.BitfieldSize != 0 || m.Offset%8 != 0 {
			return 0, fmt.Errorf("member %s is a bit field", name)
		}
		if n, err := btf.Sizeof(m.Type); err != nil || n != size {
			return 0, fmt.Errorf("member %s is %d bytes, want %d (%v)", name, n, size, err)
		}
		return int32(m.Offset.Bytes()), nil
	}
	return 0, errors.New("no member " + name)
}
