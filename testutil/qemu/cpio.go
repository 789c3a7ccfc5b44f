package qemu

import (
	"bytes"
	"fmt"
)

// cpioWriter writes a cpio archive in the "newc" format the kernel
// unpacks as an initramfs: a 110-byte ASCII header per entry (magic
// 070701 and 13 eight-digit hex fields), the NUL-terminated name and the
// data, each padded to 4 bytes, and a TRAILER!!! entry at the end.
type cpioWriter struct {
	buf bytes.Buffer
	ino int
}

const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeChar = 0o020000
)

func (w *cpioWriter) entry(name string, mode, rdevMajor, rdevMinor int, data []byte) {
	w.ino++
	nlink := 1
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	fmt.Fprintf(&w.buf, "070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		w.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	w.buf.WriteString(name)
	w.buf.WriteByte(0)
	w.pad()
	w.buf.Write(data)
	w.pad()
}

func (w *cpioWriter) pad() {
	for w.buf.Len()%4 != 0 {
		w.buf.WriteByte(0)
	}
}

// dir adds a directory (mode 0755).
func (w *cpioWriter) dir(name string) { w.entry(name, modeDir|0o755, 0, 0, nil) }

// file adds a regular file.
func (w *cpioWriter) file(name string, perm int, data []byte) {
	w.entry(name, modeFile|perm, 0, 0, data)
}

// device adds a character device node (mode 0600).
func (w *cpioWriter) device(name string, major, minor int) {
	w.entry(name, modeChar|0o600, major, minor, nil)
}

// close ends the archive and returns it.
func (w *cpioWriter) close() []byte {
	w.entry("TRAILER!!!", 0, 0, 0, nil)
	return w.buf.Bytes()
}
