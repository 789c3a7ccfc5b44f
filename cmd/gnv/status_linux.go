package main

import (
	"github.com/gnv-project/gnv/link"
	"github.com/gnv-project/gnv/link/kudp"
)

// kernelUDPStats reads a kernel UDP transport's counters.
func kernelUDPStats(t link.Transport) (socketStats, bool) {
	k, ok := t.(*kudp.Transport)
	if !ok {
		return socketStats{}, false
	}
	st := k.Stats()
	return socketStats{
		RxDatagrams: st.DatagramsReceived, RxBytes: &st.BytesReceived, RxErrors: st.ReceiveErrors + st.Truncated,
		TxDatagrams: st.DatagramsSent, TxBytes: &st.BytesSent, TxErrors: st.SendErrors,
		Transport: map[string]uint64{"gso_sends": st.GSOSends, "gso_fallbacks": st.GSOFallbacks, "gro_splits": st.GROSplits,
			"truncated": st.Truncated, "receive_errors": st.ReceiveErrors},
	}, true
}
