package tlsmail

/*
#include <stdlib.h>
#include <tlsmail.h>
*/
import "C"

import (
	"time"
	"unsafe"
)

// Result is tm_result: the class of a delivery or of one recipient.
type Result int

const (
	ResultNone Result = 0 // nothing attempted
	Delivered  Result = 1 // a 2xx reply to the end of data was received
	Deferred   Result = 2 // temporary failure: retry later
	Uncertain  Result = 3 // end of data sent, no reply: may have arrived
	Bounced    Result = 4 // permanent failure: do not retry
)

func (r Result) String() string { return C.GoString(C.tm_result_name(C.int(r))) }

// TLSFailure is tm_tls_failure: why TLS is not in use.
type TLSFailure int

const (
	TLSFailureNone        TLSFailure = 0
	TLSFailureNotOffered  TLSFailure = 1
	TLSFailureRefused     TLSFailure = 2
	TLSFailureHandshake   TLSFailure = 3
	TLSFailureCertificate TLSFailure = 4
	TLSFailureNotTried    TLSFailure = 5
)

func (f TLSFailure) String() string {
	switch f {
	case TLSFailureNone:
		return "none"
	case TLSFailureNotOffered:
		return "not-offered"
	case TLSFailureRefused:
		return "refused"
	case TLSFailureHandshake:
		return "handshake"
	case TLSFailureCertificate:
		return "certificate"
	case TLSFailureNotTried:
		return "not-tried"
	}
	return "unknown"
}

// MTASTSMode is tm_mta_sts: what MTA-STS (RFC 8461) made of the recipient
// domain.  DeliveryStatus.MTASTS holds its String(), the library's name.
type MTASTSMode int

const (
	MTASTSOff         MTASTSMode = 0 // "off": switched off, or an explicit host
	MTASTSNoPolicy    MTASTSMode = 1 // "no-policy": no usable TXT record, nothing cached
	MTASTSNone        MTASTSMode = 2 // "none": a policy in mode none
	MTASTSTesting     MTASTSMode = 3 // "testing": normal policy, MTASTSWouldRefuse reports
	MTASTSEnforce     MTASTSMode = 4 // "enforce": matching MX hosts over verified TLS, or deferred
	MTASTSFetchFailed MTASTSMode = 5 // "fetch-failed": a TXT record, no policy, none cached
)

func (m MTASTSMode) String() string { return C.GoString(C.tm_mta_sts_name(C.int(m))) }

// RecipientStatus is tm_rcpt_status: the outcome for one recipient.
type RecipientStatus struct {
	Address      string
	Result       Result
	Code         int
	EnhancedCode string
	Message      string
}

// DeliveryStatus is tm_delivery_status, field for field (see tlsmail.h).
//
// TLSResumed is true when the TLS session was resumed (a session ticket or
// ID, a TLS 1.3 PSK) instead of fully handshaken; CertVerified is then what
// the full handshake that made the session found, never more.
//
// DANE (RFC 7672, docs/dane.md): DANE is what DANE made of the MX host,
// by tm_dane_name: "off" (no trusted DNSSEC resolver, or DANE switched
// off), "insecure", "no-tlsa", "verified", "tlsa-unusable", "failed", or
// "pending" (usable TLSA records, TLS not tried yet: the status of
// OpenSession).  MXDNSSEC is true when the MX RRset (or the host's address
// records) validated.  CertVerifiedBy says what authenticated the server:
// "" (nothing: CertVerified is false), "pkix" (a trusted CA and the host
// name) or "dane" (a TLSA record); DANETLSA is the record that matched,
// "usage selector mtype" (e.g. "3 1 1"), else "".
//
// MTA-STS (RFC 8461, docs/mta-sts.md): MTASTS is the policy the delivery
// followed, by tm_mta_sts_name (MTASTSMode.String): "off" (switched off,
// or an explicit host), "no-policy", "none", "testing", "enforce" or
// "fetch-failed".  MTASTSID is the policy's id from its TXT record, else
// ""; MTASTSCached is true when the policy came from the context's cache;
// MTASTSWouldRefuse (testing mode) is true when enforce would have refused
// the host; MTASTSError says in words what enforce refused or would have
// refused, or why no policy could be fetched.  On a host with usable TLSA
// records DANE applies instead.
type DeliveryStatus struct {
	Result       Result
	ErrorCode    int // the tm_error the call returned (0 = TM_OK)
	Code         int // the last meaningful SMTP reply code, 0 if none
	EnhancedCode string
	Message      string
	Description  string // the library's explanation in words

	TLS          bool
	CertVerified bool // the truth, also when SkipVerify did not enforce it
	TLSResumed   bool // resumed session, not a full handshake (see below)
	TLSFailure   TLSFailure
	TLSVersion   string
	TLSCipher    string
	TLSError     string

	DANE           string // "off", "insecure", "no-tlsa", "verified", "tlsa-unusable", "failed", "pending"
	MXDNSSEC       bool   // the MX (or address) records validated
	CertVerifiedBy string // "", "pkix" or "dane"
	DANETLSA       string // the TLSA record that matched, "3 1 1", else ""

	MTASTS            string // "off", "no-policy", "none", "testing", "enforce", "fetch-failed"
	MTASTSID          string // the policy's id, else ""
	MTASTSCached      bool   // the policy came from the cache
	MTASTSWouldRefuse bool   // testing: enforce would have refused the host
	MTASTSError       string // what enforce refused (or would have), or why no fetch

	MXHost    string
	MXAddress string
	MXPort    int

	AttemptNo      int
	SessionSeconds float64
	UTF8           bool

	// Policy is the policy applied after resolution (every flag On or Off);
	// the *Source fields say where each flag came from.
	Policy                  Policy
	RequireTLSSource        PolicySource
	SkipVerifySource        PolicySource
	KeepUnverifiedTLSSource PolicySource
	Floor                   Floor

	// Recipients has each recipient's outcome, in the order of Message.To
	// (the library writes them into a C array this package passes as
	// tm_message.rcpt_status).  RcptCount and RcptDelivered..RcptBounced
	// count them by result.
	Recipients    []RecipientStatus
	RcptCount     int
	RcptDelivered int
	RcptDeferred  int
	RcptUncertain int
	RcptBounced   int
	Transactions  int // SMTP transactions the message took (see tlsmail.h)

	raw      *C.tm_delivery_status // for JSON
	rawRcpts []C.tm_rcpt_status    // Go copies of the recipients, for JSON
}

// Delivered reports whether every recipient was delivered.
func (s *DeliveryStatus) Delivered() bool { return s.Result == Delivered }

// Err returns nil when every recipient was delivered, else an *Error of
// the status's class, as the Python binding's raise_for_result: Code is
// ErrorCode, Result is Result (Deferred for ErrTLSRequired) and Status is a
// copy of s.  For the status of Deliver or Send it is the error the call
// returned, rebuilt from the status alone (an ErrRead error lacks the
// io.Reader's error).  Err is never nil for a status with nothing
// delivered: the zero status, or that of a successful OpenSession or
// StartTLS, gives an *Error with Code 0 and ResultNone, which matches no
// class.
func (s *DeliveryStatus) Err() error {
	if s.Result == Delivered {
		return nil
	}
	msg := strerror(s.ErrorCode)
	if s.ErrorCode == 0 {
		msg = "not delivered (result " + s.Result.String() + ")"
	}
	return withStatus(&Error{Code: s.ErrorCode, Msg: msg}, *s)
}

// Duration is SessionSeconds as a time.Duration.
func (s *DeliveryStatus) Duration() time.Duration {
	return time.Duration(s.SessionSeconds * float64(time.Second))
}

func gostr(p *C.char) string { return C.GoString(p) }

// statusRoundTrip fills a C status with the DANE fields given and converts
// it (for the tests).
func statusRoundTrip(dane, mxDNSSEC, verified, verifiedBy int, tlsa string) DeliveryStatus {
	st := newCStatus()
	st.dane = C.int(dane)
	st.mx_dnssec = C.int(mxDNSSEC)
	st.cert_verified = C.int(verified)
	st.cert_verified_by = C.int(verifiedBy)
	for i := 0; i < len(tlsa) && i < len(st.dane_tlsa)-1; i++ {
		st.dane_tlsa[i] = C.char(tlsa[i])
	}
	return statusFromC(st, nil, 0)
}

// statusSTSRoundTrip fills a C status with the MTA-STS fields given and
// converts it (for the tests).
func statusSTSRoundTrip(mode int, id string, cached, wouldRefuse int, why string) DeliveryStatus {
	st := newCStatus()
	st.mta_sts = C.int(mode)
	st.mta_sts_cached = C.int(cached)
	st.mta_sts_would_refuse = C.int(wouldRefuse)
	for i := 0; i < len(id) && i < len(st.mta_sts_id)-1; i++ {
		st.mta_sts_id[i] = C.char(id[i])
	}
	for i := 0; i < len(why) && i < len(st.mta_sts_error)-1; i++ {
		st.mta_sts_error[i] = C.char(why[i])
	}
	return statusFromC(st, nil, 0)
}

func resolvedFlag(v C.int) Flag {
	if v > 0 {
		return On
	}
	return Off
}

// newCStatus is an empty tm_delivery_status of this package's version, in
// Go memory (it holds no pointers, so cgo may be given it).
func newCStatus() *C.tm_delivery_status {
	st := new(C.tm_delivery_status)
	C.tm_status_init(st, C.TM_STATUS_VERSION)
	return st
}

// statusFromC converts a status and the first entries of the C recipient
// array (capacity capacity, nil for none) that the call filled.
func statusFromC(st *C.tm_delivery_status, rcpts *C.tm_rcpt_status, capacity int) DeliveryStatus {
	n := int(st.rcpt_count)
	if n > capacity {
		n = capacity
	}
	if rcpts == nil {
		n = 0
	}
	var raw []C.tm_rcpt_status
	if n > 0 {
		raw = make([]C.tm_rcpt_status, n)
		copy(raw, unsafe.Slice(rcpts, n))
	}
	rc := make([]RecipientStatus, n)
	for i := 0; i < n; i++ {
		r := &raw[i]
		rc[i] = RecipientStatus{
			Address: gostr(&r.address[0]), Result: Result(r.result), Code: int(r.code),
			EnhancedCode: gostr(&r.enhanced_code[0]), Message: gostr(&r.message[0]),
		}
	}
	return DeliveryStatus{
		Result: Result(st.result), ErrorCode: int(st.error), Code: int(st.code),
		EnhancedCode: gostr(&st.enhanced_code[0]), Message: gostr(&st.message[0]),
		Description: gostr(&st.description[0]),
		TLS:         st.tls != 0, CertVerified: st.cert_verified != 0, TLSResumed: st.tls_resumed != 0,
		TLSFailure: TLSFailure(st.tls_failure), TLSVersion: gostr(&st.tls_version[0]),
		TLSCipher: gostr(&st.tls_cipher[0]), TLSError: gostr(&st.tls_error[0]),
		DANE: C.GoString(C.tm_dane_name(st.dane)), MXDNSSEC: st.mx_dnssec != 0,
		CertVerifiedBy: C.GoString(C.tm_verified_by_name(st.cert_verified_by)), DANETLSA: gostr(&st.dane_tlsa[0]),
		MTASTS: C.GoString(C.tm_mta_sts_name(st.mta_sts)), MTASTSID: gostr(&st.mta_sts_id[0]),
		MTASTSCached: st.mta_sts_cached != 0, MTASTSWouldRefuse: st.mta_sts_would_refuse != 0, MTASTSError: gostr(&st.mta_sts_error[0]),
		MXHost: gostr(&st.mx_host[0]), MXAddress: gostr(&st.mx_address[0]), MXPort: int(st.mx_port),
		AttemptNo: int(st.attempt_no), SessionSeconds: float64(st.session_seconds),
		UTF8: st.utf8 != 0,
		Policy: Policy{resolvedFlag(st.policy.require_tls), resolvedFlag(st.policy.skip_verify),
			resolvedFlag(st.policy.keep_unverified_tls)},
		RequireTLSSource:        PolicySource(st.require_tls_source),
		SkipVerifySource:        PolicySource(st.skip_verify_source),
		KeepUnverifiedTLSSource: PolicySource(st.keep_unverified_tls_source),
		Floor:                   Floor(st.floor),
		Recipients:              rc,
		RcptCount:               int(st.rcpt_count),
		RcptDelivered:           int(st.rcpt_delivered),
		RcptDeferred:            int(st.rcpt_deferred),
		RcptUncertain:           int(st.rcpt_uncertain),
		RcptBounced:             int(st.rcpt_bounced),
		Transactions:            int(st.transactions),
		raw:                     st,
		rawRcpts:                raw,
	}
}

// JSON returns the status as one JSON object, written by tm_status_json.
// A DeliveryStatus not filled by this package gives an empty status.
func (s *DeliveryStatus) JSON() string {
	st := s.raw
	if st == nil {
		st = newCStatus()
	}
	var rcpts *C.tm_rcpt_status
	if len(s.rawRcpts) > 0 {
		rcpts = &s.rawRcpts[0] // Go memory without Go pointers: may be passed
	}
	nr := C.size_t(len(s.rawRcpts))
	n := C.tm_status_json(st, rcpts, nr, nil, 0)
	if n < 0 {
		return "{}"
	}
	buf := (*C.char)(C.malloc(C.size_t(n) + 1))
	if buf == nil {
		return "{}"
	}
	defer C.free(unsafe.Pointer(buf))
	C.tm_status_json(st, rcpts, nr, buf, C.size_t(n)+1)
	return C.GoStringN(buf, n)
}

// MarshalJSON makes encoding/json produce the library's JSON object.
func (s DeliveryStatus) MarshalJSON() ([]byte, error) { return []byte(s.JSON()), nil }
