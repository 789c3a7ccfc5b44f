package vmnet_test

import (
	"os"
	"testing"

	"github.com/gnv-project/gnv/testutil/leakcheck"
)

// TestMain runs every test under gVisor's reference leak checker.
func TestMain(m *testing.M) { os.Exit(leakcheck.Run(m)) }
