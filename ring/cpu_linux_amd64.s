#include "textflag.h"

// func lslCPU() (v uint32, ok bool)
//
// Reads the segment limit of the per-CPU GDT entry that Linux sets up for
// the vDSO's getcpu (GDT_ENTRY_CPUNODE, selector 15*8+3): its low 12 bits are
// the CPU number. LSL is unprivileged and does not leave a virtual machine.
TEXT ·lslCPU(SB),NOSPLIT,$0-5
	MOVL $0x7b, AX
	BYTE $0x0F; BYTE $0x03; BYTE $0xC0 // LSL EAX, EAX
	SETEQ ok+4(FP)
	MOVL AX, v+0(FP)
	RET
