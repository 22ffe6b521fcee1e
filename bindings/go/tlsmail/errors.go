package tlsmail

/*
#include <tlsmail.h>
*/
import "C"

// Error is a libtlsmail error: Code is the tm_error (a negative number),
// Msg its text.  Compare with errors.Is against the Err* values, which
// match on Code only, or against ErrResultDeferred, ErrResultUncertain and
// ErrResultBounced, which match on Result.  Err is the underlying cause
// when there is one (the io.Reader's error for ErrRead).  Line is the
// 1-based line for ErrSyntax.
//
// Result is the class of the outcome, the Result of the DeliveryStatus the
// call filled: after a partial delivery (ErrPartial) the class of the
// recipients that did not get the message.  An ErrTLSRequired error is
// always Deferred.  Result is ResultNone when the call filled no status
// (a closed Context or Session, no recipients, a malformed argument caught
// before the library was called).  Status is a copy of that status, or nil.
type Error struct {
	Code int
	Msg  string
	Line int
	Err  error

	Result Result
	Status *DeliveryStatus
}

func (e *Error) Error() string { return "tlsmail: " + e.Msg }

// Is reports whether target is an *Error with the same Code (the Err*
// values), or the result class of e (ErrResultDeferred, ErrResultUncertain,
// ErrResultBounced).
func (e *Error) Is(target error) bool {
	switch t := target.(type) {
	case *Error:
		return t != nil && t.Code == e.Code
	case resultClass:
		return classOf(e.Code, e.Result) == Result(t)
	}
	return false
}

// Unwrap returns the cause (the reader's error for ErrRead), if any.
func (e *Error) Unwrap() error { return e.Err }

// resultClass is the type of ErrResultDeferred, ErrResultUncertain and
// ErrResultBounced.
type resultClass Result

func (c resultClass) Error() string { return "tlsmail: result " + Result(c).String() }

// The result classes, for errors.Is: an *Error matches the one of its
// Result, as in the Python binding's Deferred, Uncertain and Bounced.
// ErrTLSRequired (TLS required and no MX host gave it) matches
// ErrResultDeferred too.  (ErrUncertain matches the code TM_EUNCERTAIN
// only; ErrResultUncertain also matches a partial delivery whose failed
// recipients are uncertain.)
var (
	ErrResultDeferred  error = resultClass(Deferred)  // temporary failure: retry later
	ErrResultUncertain error = resultClass(Uncertain) // no reply to the end of data: may have arrived
	ErrResultBounced   error = resultClass(Bounced)   // permanent failure: do not retry
)

// classOf is the class of an error with code and result: Deferred for
// TM_ETLSREQUIRED (the Python binding's TLSRequired is a Deferred), else
// the result.
func classOf(code int, r Result) Result {
	if code == int(C.TM_ETLSREQUIRED) {
		return Deferred
	}
	return r
}

// withStatus returns err, when it is an *Error, as a new *Error with the
// class of st and a copy of st.  Other errors are returned as they are.
func withStatus(err error, st DeliveryStatus) error {
	e, ok := err.(*Error)
	if !ok || e == nil {
		return err
	}
	c := *e // never change a sentinel
	c.Result = classOf(c.Code, st.Result)
	c.Status = &st
	return &c
}

func strerror(code int) string { return C.GoString(C.tm_strerror(C.int(code))) }

func sentinel(code C.int) *Error { return &Error{Code: int(code), Msg: strerror(int(code))} }

func newError(code int, msg string) *Error {
	return &Error{Code: code, Msg: strerror(code) + ": " + msg}
}

// codeError returns nil for TM_OK and a fresh *Error otherwise.
func codeError(code int) error {
	if code == 0 {
		return nil
	}
	return &Error{Code: code, Msg: strerror(code)}
}

// The library's error codes, for errors.Is.
var (
	ErrInvalid     = sentinel(C.TM_EINVAL)       // an argument is NULL, out of range or malformed
	ErrNoMem       = sentinel(C.TM_ENOMEM)       // out of memory
	ErrAddress     = sentinel(C.TM_EADDRESS)     // an envelope address is invalid
	ErrConnect     = sentinel(C.TM_ECONNECT)     // no MX host could be connected to
	ErrTimeout     = sentinel(C.TM_ETIMEOUT)     // a deadline passed
	ErrClosed      = sentinel(C.TM_ECLOSED)      // the server closed the connection
	ErrProtocol    = sentinel(C.TM_EPROTOCOL)    // the server broke the SMTP protocol
	ErrTLS         = sentinel(C.TM_ETLS)         // TLS could not be established
	ErrTLSRequired = sentinel(C.TM_ETLSREQUIRED) // TLS required and no MX offered it
	ErrRejected    = sentinel(C.TM_EREJECTED)    // the server refused the message
	ErrPartial     = sentinel(C.TM_EPARTIAL)     // delivered to some recipients only
	ErrUncertain   = sentinel(C.TM_EUNCERTAIN)   // end of data sent, no reply
	ErrContent     = sentinel(C.TM_ECONTENT)     // the content is unusable (NUL byte)
	ErrRead        = sentinel(C.TM_EREAD)        // the message reader failed
	ErrState       = sentinel(C.TM_ESTATE)       // the session cannot be used for this call
	ErrCAFile      = sentinel(C.TM_ECAFILE)      // the CA file could not be read or parsed
	ErrDNS         = sentinel(C.TM_EDNS)         // the MX lookup failed temporarily
	ErrNoDomain    = sentinel(C.TM_ENODOMAIN)    // the recipient domain does not exist
	ErrNullMX      = sentinel(C.TM_ENULLMX)      // the domain accepts no mail
	ErrTooMany     = sentinel(C.TM_ETOOMANY)     // unused since 0.2 (recipients are not capped)
	ErrIO          = sentinel(C.TM_EIO)          // a local I/O or system error
	ErrUTF8        = sentinel(C.TM_EUTF8)        // non-ASCII address, no SMTPUTF8
	ErrNotFound    = sentinel(C.TM_ENOTFOUND)    // no setting for that domain
	ErrSyntax      = sentinel(C.TM_ESYNTAX)      // a settings file line is malformed
)
