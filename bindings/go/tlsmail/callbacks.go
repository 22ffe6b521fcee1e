package tlsmail

// The C library calls back into Go for the log callback and for streamed
// message content.  Both are called synchronously on the thread that runs
// the tm_ call (never from another thread), so no extra locking is needed.
// This file holds only the exported functions: a cgo preamble in a file
// with //export may contain declarations only.

/*
#include <stddef.h>
#include <stdint.h>
*/
import "C"

import (
	"io"
	"runtime/cgo"
	"unsafe"
)

//export tmgoLog
func tmgoLog(h C.uintptr_t, level C.int, msg *C.char) {
	fn, ok := cgo.Handle(h).Value().(func(LogLevel, string))
	if !ok || fn == nil {
		return
	}
	defer func() { _ = recover() }() // never unwind through C
	fn(LogLevel(level), C.GoString(msg))
}

// reader is the state of one streamed message.
type reader struct {
	r   io.Reader
	err error
	eof bool
}

//export tmgoRead
func tmgoRead(h C.uintptr_t, buf *C.uchar, size C.size_t) (n C.long) {
	st := cgo.Handle(h).Value().(*reader)
	if st.err != nil {
		return -1
	}
	if st.eof {
		return 0
	}
	defer func() {
		if p := recover(); p != nil {
			st.err = &panicError{p}
			n = -1
		}
	}()
	b := unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(size))
	for {
		k, err := st.r.Read(b)
		if err == io.EOF {
			st.eof = true
		} else if err != nil {
			st.err = err // reported on the next call, after these bytes
			if k == 0 {
				return -1
			}
		}
		if k > 0 || st.eof {
			return C.long(k)
		}
		// 0, nil: io.Reader allows it; ask again.
	}
}

type panicError struct{ v interface{} }

func (p *panicError) Error() string { return "tlsmail: message reader panicked" }
