//go:build linux

package tuntap_test

import (
	"os"
	"testing"

	"github.com/gnv-project/gnv/testutil/leakcheck"
)

// TestMain checks that no test leaks a gVisor buffer.
func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m)) }
