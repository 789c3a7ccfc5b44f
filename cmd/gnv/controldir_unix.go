//go:build unix

package main

import (
	"fmt"
	"os"
	"syscall"
)

// checkControlDir refuses a control socket directory that another user
// (other than root) owns, or that others may write to without the sticky
// bit: whoever controls the directory could replace the socket. (The
// fallback directory in the shared temporary directory is predictable, so
// someone else may have created it first.)
func checkControlDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("control socket directory %s belongs to uid %d, not to this user (uid %d): choose another --control", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 && fi.Mode()&os.ModeSticky == 0 {
		return fmt.Errorf("control socket directory %s is writable by others (mode %v): chmod go-w it, or choose another --control", dir, fi.Mode().Perm())
	}
	return nil
}
