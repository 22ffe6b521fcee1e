package tlsmail

// The C library calls back into Go for the log callback, for streamed
// message content and for the MTA-STS fetch and cache store.  All are
// called synchronously on the thread that runs the tm_ call (never from
// another thread).  The log and read state belong to one call; the MTA-STS
// callbacks belong to the context and may run on several goroutines at
// once, so their error record takes a lock.  Nothing may unwind into C:
// every panic is recovered and turned into a failure.
// This file holds only the exported functions: a cgo preamble in a file
// with //export may contain declarations only.

/*
#include <stddef.h>
#include <stdint.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"io"
	"runtime/cgo"
	"strings"
	"sync"
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

// The tm_error values the MTA-STS callbacks return (TM_EIO, TM_ENOTFOUND);
// a file with //export cannot take them from tlsmail.h.
const (
	cbEIO       = -21
	cbENotFound = -23
)

// stsCallbacks are a context's MTA-STS callbacks and the last error they
// gave.
type stsCallbacks struct {
	fetch  func(domain, url string) ([]byte, error)
	store  func(domain, entry string)
	lookup func(domain string) (string, bool)

	mu  sync.Mutex
	err error
}

func (cb *stsCallbacks) record(err error) {
	cb.mu.Lock()
	cb.err = err
	cb.mu.Unlock()
}

func (cb *stsCallbacks) lastError() error {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	return cb.err
}

// recoverInto turns a panic of an MTA-STS callback into a recorded error
// and sets *rc to fail.
func (cb *stsCallbacks) recoverInto(what string, rc *C.int, fail C.int) {
	if p := recover(); p != nil {
		cb.record(fmt.Errorf("tlsmail: %s panicked: %v", what, p))
		if rc != nil {
			*rc = fail
		}
	}
}

func stsCallbacksOf(h C.uintptr_t) *stsCallbacks {
	cb, _ := cgo.Handle(h).Value().(*stsCallbacks)
	return cb
}

//export tmgoStsFetch
func tmgoStsFetch(h C.uintptr_t, domain, url, body *C.char, size C.size_t, length *C.size_t) (rc C.int) {
	cb := stsCallbacksOf(h)
	if cb == nil || cb.fetch == nil {
		return cbEIO
	}
	defer cb.recoverInto("STSFetch", &rc, cbEIO)
	b, err := cb.fetch(C.GoString(domain), C.GoString(url))
	if err != nil {
		cb.record(err)
		return cbEIO
	}
	if uint64(len(b)) > uint64(size) {
		cb.record(fmt.Errorf("tlsmail: STSFetch: the policy of %s has %d bytes, more than %d",
			C.GoString(domain), len(b), uint64(size)))
		return cbEIO
	}
	if len(b) > 0 {
		copy(unsafe.Slice((*byte)(unsafe.Pointer(body)), len(b)), b)
	}
	*length = C.size_t(len(b))
	return 0
}

//export tmgoStsStore
func tmgoStsStore(h C.uintptr_t, domain, entry *C.char) {
	cb := stsCallbacksOf(h)
	if cb == nil || cb.store == nil {
		return
	}
	defer cb.recoverInto("STSStore", nil, 0)
	cb.store(C.GoString(domain), C.GoString(entry))
}

//export tmgoStsLookup
func tmgoStsLookup(h C.uintptr_t, domain, buf *C.char, size C.size_t) (rc C.int) {
	cb := stsCallbacksOf(h)
	if cb == nil || cb.lookup == nil {
		return cbENotFound
	}
	defer cb.recoverInto("STSLookup", &rc, cbENotFound)
	e, ok := cb.lookup(C.GoString(domain))
	if !ok {
		return cbENotFound
	}
	e = strings.TrimRight(e, "\r\n")
	if strings.ContainsAny(e, "\x00\n") {
		cb.record(errors.New("tlsmail: STSLookup: an MTA-STS cache entry is one line without NUL"))
		return cbENotFound
	}
	if uint64(len(e))+1 > uint64(size) {
		cb.record(fmt.Errorf("tlsmail: STSLookup: the entry of %s (%d bytes) does not fit in %d",
			C.GoString(domain), len(e), uint64(size)))
		return cbENotFound
	}
	dst := unsafe.Slice((*byte)(unsafe.Pointer(buf)), len(e)+1)
	copy(dst, e)
	dst[len(e)] = 0
	return 0
}
