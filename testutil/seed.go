package testutil

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
	"sync"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// SeededReader returns a reproducible random byte stream for (seed,
// stream): ChaCha8 keyed by both. It is safe for concurrent use (the
// netstack reads it from several goroutines), but the bytes each reader
// gets then depend on the order of the reads. Give it to a netstack as
// stack.Options.SecureRNG (gnv: stack.Config.Rand) to make the stack's
// choices reproducible: TCP initial sequence numbers and timestamp offsets,
// ephemeral ports, IPv4 IDs, SYN cookies, neighbour and IGMP/MLD timer
// jitter, DAD nonces. It is predictable by design: use it in tests only.
func SeededReader(seed int64, stream uint64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[0:], uint64(seed))
	binary.LittleEndian.PutUint64(key[8:], stream)
	copy(key[16:], "gnv testutil rng")
	return &lockedReader{r: rand.NewChaCha8(key)}
}

type lockedReader struct {
	mu sync.Mutex
	r  *rand.ChaCha8
}

func (l *lockedReader) Read(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Read(b)
}

// HostRand returns the random source NewHosts gives host i's (counting
// from 0) tunnel (stack.Config.Rand) for seed.
func HostRand(seed int64, i int) io.Reader {
	return SeededReader(seed, uint64(i))
}

// HostMAC returns the MAC NewHosts gives host i's (counting from 0)
// overlay NIC (underlay false; L2 tunnels) or fabric port (underlay true)
// for seed: locally administered unicast, 4 bytes drawn from the seed and
// the last byte i, so hosts never collide. Underlay MACs start with 0x02,
// overlay MACs with 0x06.
func HostMAC(seed int64, i int, underlay bool) tcpip.LinkAddress {
	r := rand.New(rand.NewPCG(uint64(seed), 0x6d6163)) // "mac"
	v := r.Uint32()
	first := byte(0x06)
	if underlay {
		first = 0x02
	}
	return tcpip.LinkAddress([]byte{first, byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v), byte(i)})
}
