//go:build !linux && !darwin && !freebsd && !windows

package kudp

import (
	"fmt"
	"runtime"
)

// setDontFragment: this system has no socket option for DF that gnv knows,
// so DF stays clear (the default of the BSDs) and asking for it fails.
func setDontFragment(fd int, v6, on bool) error {
	if on {
		return fmt.Errorf("kernel UDP: DontFragment is not supported on %s", runtime.GOOS)
	}
	return nil
}
