//go:build !purego

#include "textflag.h"

// func sumAVX2(b []byte) uint64
//
// Four accumulators of four 64-bit lanes each: every 32 bytes loaded are
// split into the low and the high 32-bit halves of their 64-bit words
// (a mask and a shift, no shuffle), which are added to two accumulators.
TEXT ·sumAVX2(SB), NOSPLIT, $0-32
	MOVQ b_base+0(FP), SI
	MOVQ b_len+8(FP), CX
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	VPCMPEQD Y15, Y15, Y15
	VPSRLQ $32, Y15, Y15 // 0x00000000ffffffff in each lane
	SHRQ $6, CX
	JZ done

loop:
	VMOVDQU (SI), Y4
	VMOVDQU 32(SI), Y5
	VPAND Y15, Y4, Y6
	VPSRLQ $32, Y4, Y4
	VPAND Y15, Y5, Y7
	VPSRLQ $32, Y5, Y5
	VPADDQ Y6, Y0, Y0
	VPADDQ Y4, Y1, Y1
	VPADDQ Y7, Y2, Y2
	VPADDQ Y5, Y3, Y3
	ADDQ $64, SI
	DECQ CX
	JNZ loop

done:
	VPADDQ Y1, Y0, Y0
	VPADDQ Y3, Y2, Y2
	VPADDQ Y2, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPADDQ X1, X0, X0
	VPSHUFD $0x4e, X0, X1
	VPADDQ X1, X0, X0
	VMOVQ X0, AX
	VZEROUPPER
	MOVQ AX, ret+24(FP)
	RET
