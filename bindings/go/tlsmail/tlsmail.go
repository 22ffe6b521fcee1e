// Package tlsmail delivers email to a domain's MX hosts over SMTP with
// opportunistic STARTTLS, under a policy (RequireTLS, SkipVerify,
// KeepUnverifiedTLS), and reports how each delivery went: whether TLS was
// used, whether the certificate was verified, which MX host took it.
//
// It wraps libtlsmail (include/tlsmail.h) with cgo and finds it with
// pkg-config (libtlsmail.pc).
//
//	ctx, err := tlsmail.NewContext(tlsmail.ContextOptions{})
//	defer ctx.Close()
//	st, err := tlsmail.Deliver(ctx, tlsmail.Message{
//		From: "me@example.com", To: []string{"you@example.org"},
//		Data: []byte("Subject: hi\r\n\r\nHello.\r\n"),
//	}, nil, nil)
//	fmt.Println(st.Result, st.TLS, st.CertVerified, st.MXHost, err)
//
// Every call that talks to a server blocks the calling goroutine (and its OS
// thread) for at most the context's timeouts.  A Context is safe for
// concurrent use by many goroutines; a Session must be used by one
// goroutine at a time (its methods are serialised by a mutex).
//
// Errors: every call that fills a DeliveryStatus returns it even when it
// also returns an error.  The error is nil only when the call fully
// succeeded (for a delivery: every recipient delivered); otherwise it is an
// *Error whose Code is the library's tm_error, comparable with errors.Is
// against the Err* sentinels (errors.Is(err, tlsmail.ErrTLSRequired)),
// and whose Result is the class of the outcome (DeliveryStatus.Result),
// comparable with errors.Is against ErrResultDeferred, ErrResultUncertain
// and ErrResultBounced: Deferred and Uncertain may be retried (Uncertain
// may duplicate), Bounced must not.  ErrTLSRequired is a Deferred.
// (*DeliveryStatus).Err gives the same error from a status.
//
// MTA-STS (RFC 8461, docs/mta-sts.md) is on by default: a delivery to a
// domain's MX hosts follows the domain's published policy, and
// DeliveryStatus.MTASTS says which.  ContextOptions{MTASTS: Off} turns it
// off; (*Context).STSCacheSave and STSCacheLoad keep the policy cache
// across restarts.
package tlsmail

/*
#cgo pkg-config: libtlsmail
#include <stdlib.h>
#include <stdint.h>
#include <tlsmail.h>

extern void tmgoLog(uintptr_t h, int level, char *msg);
extern long tmgoRead(uintptr_t h, unsigned char *buf, size_t size);
extern int tmgoStsFetch(uintptr_t h, char *domain, char *url, char *body, size_t size,
                        size_t *len);
extern void tmgoStsStore(uintptr_t h, char *domain, char *entry);
extern int tmgoStsLookup(uintptr_t h, char *domain, char *buf, size_t size);

static void tmgo_log_tramp(void *arg, int level, const char *msg)
{
	tmgoLog((uintptr_t)arg, level, (char *)msg);
}

static long tmgo_read_tramp(void *arg, unsigned char *buf, size_t size)
{
	return tmgoRead((uintptr_t)arg, buf, size);
}

static int tmgo_sts_fetch_tramp(void *arg, const char *domain, const char *url, char *body,
                                size_t size, size_t *len)
{
	return tmgoStsFetch((uintptr_t)arg, (char *)domain, (char *)url, body, size, len);
}

static void tmgo_sts_store_tramp(void *arg, const char *domain, const char *entry)
{
	tmgoStsStore((uintptr_t)arg, (char *)domain, (char *)entry);
}

static int tmgo_sts_lookup_tramp(void *arg, const char *domain, char *buf, size_t size)
{
	return tmgoStsLookup((uintptr_t)arg, (char *)domain, buf, size);
}

// One handle for the three MTA-STS callbacks; only those set are installed.
static void tmgo_set_sts(tm_context_options *o, uintptr_t h, int fetch, int store, int lookup)
{
	if (fetch) {
		o->sts_fetch = tmgo_sts_fetch_tramp;
		o->sts_fetch_arg = (void *)h;
	}
	if (store)
		o->sts_store = tmgo_sts_store_tramp;
	if (lookup)
		o->sts_lookup = tmgo_sts_lookup_tramp;
	if (store || lookup)
		o->sts_cache_arg = (void *)h;
}

// The trampolines as the library calls them (for the tests).
static int tmgo_probe_sts_fetch(uintptr_t h, const char *domain, const char *url, char *body,
                                size_t size, size_t *len)
{
	return tmgo_sts_fetch_tramp((void *)h, domain, url, body, size, len);
}

static void tmgo_probe_sts_store(uintptr_t h, const char *domain, const char *entry)
{
	tmgo_sts_store_tramp((void *)h, domain, entry);
}

static int tmgo_probe_sts_lookup(uintptr_t h, const char *domain, char *buf, size_t size)
{
	return tmgo_sts_lookup_tramp((void *)h, domain, buf, size);
}

static void tmgo_set_log(tm_context_options *o, uintptr_t h)
{
	o->log = tmgo_log_tramp;
	o->log_arg = (void *)h;
}

static void tmgo_set_reader(tm_message *m, uintptr_t h)
{
	m->read = tmgo_read_tramp;
	m->read_arg = (void *)h;
}

// The content may be Go memory: it is passed as an argument (pinned for
// the call) and stored in the C-allocated message only during the call.
static int tmgo_deliver(tm_context *ctx, tm_message *m, const void *data, size_t size,
                        const tm_policy *p, const tm_session_options *o, tm_delivery_status *st)
{
	int rc;
	m->data = data;
	m->size = size;
	rc = tm_deliver(ctx, m, p, o, st);
	m->data = NULL;
	return rc;
}

static int tmgo_send(tm_session *s, tm_message *m, const void *data, size_t size,
                     tm_delivery_status *st)
{
	int rc;
	m->data = data;
	m->size = size;
	rc = tm_send(s, m, st);
	m->data = NULL;
	return rc;
}

static void tmgo_set_to(tm_message *m, char **to, size_t n)
{
	m->to = (const char *const *)to;
	m->to_count = n;
}

static char **tmgo_strv(size_t n)
{
	return calloc(n ? n : 1, sizeof(char *));
}

static void tmgo_strv_set(char **v, size_t i, char *s)
{
	v[i] = s;
}

static void tmgo_strv_free(char **v, size_t n)
{
	size_t i;
	if (v == NULL)
		return;
	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime/cgo"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// cStructs are the public structs as cgo compiled them from tlsmail.h.
var cStructs = map[string]reflect.Type{
	"tm_policy":          reflect.TypeOf(C.tm_policy{}),
	"tm_rcpt_status":     reflect.TypeOf(C.tm_rcpt_status{}),
	"tm_delivery_status": reflect.TypeOf(C.tm_delivery_status{}),
	"tm_context_options": reflect.TypeOf(C.tm_context_options{}),
	"tm_message":         reflect.TypeOf(C.tm_message{}),
	"tm_session_options": reflect.TypeOf(C.tm_session_options{}),
}

type layoutField struct {
	name         string
	offset, size uintptr
}

// parseLayout reads tm_abi_layout()'s text: "name size field@off:size ...".
func parseLayout(text string) (map[string][]layoutField, map[string]uintptr, error) {
	fields := map[string][]layoutField{}
	sizes := map[string]uintptr{}
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		w := strings.Fields(line)
		if len(w) < 2 {
			return nil, nil, fmt.Errorf("malformed layout line %q", line)
		}
		size, err := strconv.ParseUint(w[1], 10, 32)
		if err != nil {
			return nil, nil, fmt.Errorf("malformed layout line %q", line)
		}
		sizes[w[0]] = uintptr(size)
		fl := []layoutField{}
		for _, f := range w[2:] {
			var lf layoutField
			at := strings.IndexByte(f, '@')
			colon := strings.LastIndexByte(f, ':')
			if at <= 0 || colon < at {
				return nil, nil, fmt.Errorf("malformed layout field %q", f)
			}
			off, err1 := strconv.ParseUint(f[at+1:colon], 10, 32)
			sz, err2 := strconv.ParseUint(f[colon+1:], 10, 32)
			if err1 != nil || err2 != nil {
				return nil, nil, fmt.Errorf("malformed layout field %q", f)
			}
			lf.name, lf.offset, lf.size = f[:at], uintptr(off), uintptr(sz)
			fl = append(fl, lf)
		}
		fields[w[0]] = fl
	}
	return fields, sizes, nil
}

// layoutMismatch compares a struct type with the library's layout of the
// struct named name: every field's name, offset and size in order, then the
// size; "" when they agree.
func layoutMismatch(name string, t reflect.Type, layout map[string][]layoutField, sizes map[string]uintptr) string {
	want, ok := layout[name]
	if !ok {
		return name + ": the library does not describe this struct"
	}
	var have []layoutField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Name == "_" { // padding cgo made explicit
			continue
		}
		n := f.Name
		if len(n) > 1 && n[0] == '_' { // a C name that is a Go keyword
			n = n[1:]
		}
		have = append(have, layoutField{n, f.Offset, f.Type.Size()})
	}
	for i := 0; i < len(have) || i < len(want); i++ {
		switch {
		case i >= len(want):
			return fmt.Sprintf("%s: field %d: tlsmail.h has %s, the library has no such field", name, i, have[i].name)
		case i >= len(have):
			return fmt.Sprintf("%s: field %d: tlsmail.h lacks %s", name, i, want[i].name)
		case have[i].name != want[i].name:
			return fmt.Sprintf("%s: field %d: tlsmail.h has %s, the library has %s", name, i, have[i].name, want[i].name)
		case have[i] != want[i]:
			return fmt.Sprintf("%s.%s: tlsmail.h has offset %d size %d, the library offset %d size %d",
				name, have[i].name, have[i].offset, have[i].size, want[i].offset, want[i].size)
		}
	}
	if t.Size() != sizes[name] {
		return fmt.Sprintf("%s: %d bytes in tlsmail.h, %d in the library", name, t.Size(), sizes[name])
	}
	return ""
}

// libraryLayout is the linked library's tm_abi_layout(), parsed.
func libraryLayout() (map[string][]layoutField, map[string]uintptr, error) {
	return parseLayout(C.GoString(C.tm_abi_layout()))
}

func init() {
	// The struct layout cgo compiled against (the tlsmail.h found by
	// pkg-config) must be the linked library's, field by field.
	layout, sizes, err := libraryLayout()
	if err != nil {
		panic("tlsmail: unreadable tm_abi_layout() of the linked libtlsmail " + Version() + ": " + err.Error())
	}
	for name, t := range cStructs {
		if why := layoutMismatch(name, t, layout, sizes); why != "" {
			panic(fmt.Sprintf("tlsmail: tlsmail.h and the linked libtlsmail %s differ: %s", Version(), why))
		}
	}
}

// Version is the version of the linked libtlsmail, e.g. "0.2.0".
func Version() string { return C.GoString(C.tm_version()) }

// TLSBackend is the TLS library libtlsmail was built with.
func TLSBackend() string { return C.GoString(C.tm_tls_backend()) }

// ---------------------------------------------------------------------------
// Policy

// Flag is a tri-state policy flag.
type Flag int8

const (
	Unset Flag = 0  // TM_UNSET: take the less specific level's value
	On    Flag = 1  // TM_ON
	Off   Flag = -1 // TM_OFF: off, overriding a less specific On
)

// FlagOf returns On for true and Off for false.
func FlagOf(b bool) Flag {
	if b {
		return On
	}
	return Off
}

// IsOn reports whether the flag is On.
func (f Flag) IsOn() bool { return f > 0 }

func (f Flag) String() string {
	switch {
	case f > 0:
		return "on"
	case f < 0:
		return "off"
	}
	return "unset"
}

// Policy is tm_policy.  The zero value is the default: opportunistic
// STARTTLS, certificate verified and reported, plaintext fallback.
type Policy struct {
	RequireTLS        Flag // never deliver without TLS (verified unless SkipVerify)
	SkipVerify        Flag // accept any certificate and host name
	KeepUnverifiedTLS Flag // keep TLS with a bad certificate instead of plaintext
}

func (p *Policy) toC(c *C.tm_policy) {
	C.tm_policy_init(c, C.TM_POLICY_VERSION)
	c.require_tls = C.int(p.RequireTLS)
	c.skip_verify = C.int(p.SkipVerify)
	c.keep_unverified_tls = C.int(p.KeepUnverifiedTLS)
}

func flagFromC(v C.int) Flag {
	switch {
	case v > 0:
		return On
	case v < 0:
		return Off
	}
	return Unset
}

func policyFromC(c *C.tm_policy) Policy {
	return Policy{flagFromC(c.require_tls), flagFromC(c.skip_verify), flagFromC(c.keep_unverified_tls)}
}

// policyRoundTrip converts p to a tm_policy and back (for the tests).
func policyRoundTrip(p Policy) Policy {
	var c C.tm_policy
	p.toC(&c)
	return policyFromC(&c)
}

// PolicySource is tm_policy_source: where a flag of the applied policy came from.
type PolicySource int

const (
	SourceDefault        PolicySource = 0
	SourceMessage        PolicySource = 1
	SourceSendingDomain  PolicySource = 2
	SourceRecipientFloor PolicySource = 3
)

func (s PolicySource) String() string { return C.GoString(C.tm_policy_source_name(C.int(s))) }

// Floor is tm_floor: the least TLS mail to a recipient domain must travel with.
type Floor int

const (
	FloorNone     Floor = 0 // no floor
	FloorTLS      Floor = 1 // RequireTLS forced on
	FloorVerified Floor = 2 // RequireTLS on and SkipVerify off
	// FloorDANE: only over TLS that DNSSEC-signed TLSA records
	// authenticated (Postfix's "dane-only"); MX hosts without usable TLSA
	// records are not used, and with DANE off nothing is delivered.
	FloorDANE Floor = 3
)

func (f Floor) String() string { return C.GoString(C.tm_floor_name(C.int(f))) }

// ---------------------------------------------------------------------------
// Context

// LogLevel is tm_log_level.
type LogLevel int

const (
	LogError   LogLevel = 0
	LogWarning LogLevel = 1
	LogInfo    LogLevel = 2
	LogDebug   LogLevel = 3 // includes the SMTP dialogue
)

// ContextOptions are tm_context_options.  Zero values mean the library's
// defaults: system CA store, this host's name in EHLO, port 25, the system
// resolver, RFC 5321 timeouts.  Durations are rounded up to milliseconds.
//
// CAFile and CAPath name the trust store: CAPath is a directory of PEM or
// DER CA certificates, one per file, as OpenSSL's -CApath (files that do not
// parse are skipped).  Given both, both are trusted; given neither, the
// system store is.  (*Context).ReloadCA reads them again.
//
// DNSSEC and DANE (RFC 7672; docs/dane.md): DNSSECResolver is "IP" or
// "IP:PORT" (IPv4) of a DNSSEC-validating resolver this host trusts (e.g.
// unbound on 127.0.0.1); every lookup then goes to it and its AD bit is
// believed.  DNSSECTrustResolver says the resolver asked anyway (DNSServer,
// else the system's) validates and is trusted.  Either turns DANE on; DANE
// Off turns it off again (Unset and On leave it on when a trusted resolver
// is set).  Without a trusted resolver DANE is off and the AD bit is never
// believed.
//
// MTA-STS (RFC 8461; docs/mta-sts.md) is on unless MTASTS is Off (Unset
// and On leave it on).  STSCacheMax bounds the policies kept in memory
// (default 1000, least recently used first out), STSTimeout the TXT lookup
// and the policy fetch together (default 10 s, at most half of what is left of
// DeliveryTimeout).  STSHTTPSAddress (an IP address) and STSHTTPSPort make
// the built-in fetcher connect there instead of to mta-sts.<domain>:443:
// FOR TESTS AND PRIVATE DEPLOYMENTS ONLY; the certificate must still be
// valid for mta-sts.<domain>.
//
// The MTA-STS callbacks are optional and run on the goroutine of the
// delivery that needs them (possibly on several goroutines at once):
//
//   - STSFetch fetches the policy itself (your HTTP client, your proxy)
//     instead of the built-in fetcher: it must do what RFC 8461 3.3 asks
//     (HTTPS verified for mta-sts.<domain>, no redirects, status 200 and
//     Content-Type text/plain only, a timeout) and return the body, at
//     most 65536 bytes; an error means no policy could be fetched.
//   - STSStore is told each policy that enters the cache, as one line of
//     the cache file format, to keep in your own store.
//   - STSLookup is asked when nothing is cached for a domain: the entry
//     STSStore last got for it, and true; or false.
//
// A callback that panics or returns an error counts as failed (no policy
// fetched, nothing stored, not found); (*Context).STSCallbackError returns
// the last such error.  A host that keeps no callbacks saves and loads the
// cache file instead ((*Context).STSCacheSave, STSCacheLoad).
type ContextOptions struct {
	CAFile    string // PEM bundle of trusted CAs
	CAPath    string // directory of CA certificates, one per file
	HeloName  string // name announced in EHLO/HELO
	DNSServer string // "IP" or "IP:PORT" to ask for MX records
	Port      int    // SMTP port of MX hosts

	CommandTimeout   time.Duration // replaces every per-command default left 0
	ConnectTimeout   time.Duration
	GreetingTimeout  time.Duration
	EHLOTimeout      time.Duration
	TLSTimeout       time.Duration
	MailTimeout      time.Duration
	RcptTimeout      time.Duration
	DataTimeout      time.Duration
	DataBlockTimeout time.Duration
	DataEndTimeout   time.Duration
	QuitTimeout      time.Duration
	DeliveryTimeout  time.Duration // whole Deliver / OpenSession walk

	MaxMX        int // MX hosts tried per delivery (default 5)
	MaxAddresses int // addresses tried per MX host (default 4)

	DNSSECResolver      string // "IP" or "IP:PORT" of a trusted validating resolver
	DNSSECTrustResolver bool   // the resolver asked anyway validates and is trusted
	DANE                Flag   // Off: DANE off even with a trusted resolver

	MTASTS          Flag          // Off: MTA-STS off (on by default)
	STSCacheMax     int           // MTA-STS policies kept in memory (default 1000)
	STSTimeout      time.Duration // TXT lookup + policy fetch (default 10 s)
	STSHTTPSAddress string        // tests and private deployments only
	STSHTTPSPort    int           // tests and private deployments only

	STSFetch  func(domain, url string) ([]byte, error)
	STSStore  func(domain, entry string)
	STSLookup func(domain string) (entry string, ok bool)

	// Log, when set, receives the library's diagnostics up to LogLevel,
	// synchronously on the goroutine running the call.
	Log      func(level LogLevel, line string)
	LogLevel LogLevel
}

// Context is a tm_context: trust store, resolver settings, timeouts and the
// per-domain settings tables.  Create one, share it between goroutines,
// Close it when no session uses it any more.
type Context struct {
	mu       sync.RWMutex // RLock: a call uses ptr; Lock: Close
	ptr      *C.tm_context
	log      cgo.Handle
	sts      cgo.Handle // *stsCallbacks, 0 without MTA-STS callbacks
	stsCB    *stsCallbacks
	sessions int // open sessions, under mu (write)
	smu      sync.Mutex
}

func ms(d time.Duration, what string) (C.uint, error) {
	if d < 0 {
		return 0, newError(int(C.TM_EINVAL), what+" is negative")
	}
	v := (d + time.Millisecond - 1) / time.Millisecond
	if v > 0xFFFFFFFF {
		return 0, newError(int(C.TM_EINVAL), what+" is too long")
	}
	return C.uint(v), nil
}

func cuint(v int, what string) (C.uint, error) {
	if v < 0 || int64(v) > 0xFFFFFFFF {
		return 0, newError(int(C.TM_EINVAL), what+" is out of range")
	}
	return C.uint(v), nil
}

// cstr returns a C copy of s (NULL for ""), to free with C.free.
func cstr(s string) (*C.char, error) {
	if s == "" {
		return nil, nil
	}
	if strings.IndexByte(s, 0) >= 0 {
		return nil, newError(int(C.TM_EINVAL), "string contains a NUL byte")
	}
	return C.CString(s), nil
}

// cstrReq is cstr for arguments that may not be empty-as-NULL.
func cstrReq(s string) (*C.char, error) {
	if strings.IndexByte(s, 0) >= 0 {
		return nil, newError(int(C.TM_EINVAL), "string contains a NUL byte")
	}
	return C.CString(s), nil
}

// NewContext creates a context (tm_context_new): parses the trust store
// once and seeds the random generator.  Errors: ErrInvalid, ErrNoMem,
// ErrCAFile, ErrIO.
func NewContext(o ContextOptions) (*Context, error) {
	co := (*C.tm_context_options)(C.calloc(1, C.size_t(unsafe.Sizeof(C.tm_context_options{}))))
	if co == nil {
		return nil, ErrNoMem
	}
	defer func() {
		C.free(unsafe.Pointer(co.ca_file))
		C.free(unsafe.Pointer(co.ca_path))
		C.free(unsafe.Pointer(co.helo_name))
		C.free(unsafe.Pointer(co.dns_server))
		C.free(unsafe.Pointer(co.dnssec_resolver))
		C.free(unsafe.Pointer(co.sts_https_address))
		C.free(unsafe.Pointer(co))
	}()
	C.tm_context_options_init(co, C.TM_CONTEXT_OPTIONS_VERSION)
	var err error
	if co.ca_file, err = cstr(o.CAFile); err != nil {
		return nil, err
	}
	if co.ca_path, err = cstr(o.CAPath); err != nil {
		return nil, err
	}
	if co.helo_name, err = cstr(o.HeloName); err != nil {
		return nil, err
	}
	if co.dns_server, err = cstr(o.DNSServer); err != nil {
		return nil, err
	}
	if err = o.dnssecToC(co); err != nil {
		return nil, err
	}
	if err = o.stsToC(co); err != nil {
		return nil, err
	}
	durations := []struct {
		d    time.Duration
		dst  *C.uint
		name string
	}{
		{o.CommandTimeout, &co.command_timeout_ms, "CommandTimeout"},
		{o.ConnectTimeout, &co.connect_timeout_ms, "ConnectTimeout"},
		{o.GreetingTimeout, &co.greeting_timeout_ms, "GreetingTimeout"},
		{o.EHLOTimeout, &co.ehlo_timeout_ms, "EHLOTimeout"},
		{o.TLSTimeout, &co.tls_timeout_ms, "TLSTimeout"},
		{o.MailTimeout, &co.mail_timeout_ms, "MailTimeout"},
		{o.RcptTimeout, &co.rcpt_timeout_ms, "RcptTimeout"},
		{o.DataTimeout, &co.data_timeout_ms, "DataTimeout"},
		{o.DataBlockTimeout, &co.data_block_timeout_ms, "DataBlockTimeout"},
		{o.DataEndTimeout, &co.data_end_timeout_ms, "DataEndTimeout"},
		{o.QuitTimeout, &co.quit_timeout_ms, "QuitTimeout"},
		{o.DeliveryTimeout, &co.delivery_timeout_ms, "DeliveryTimeout"},
	}
	for _, d := range durations {
		if *d.dst, err = ms(d.d, d.name); err != nil {
			return nil, err
		}
	}
	if o.Port < 0 || o.Port > 65535 {
		return nil, newError(int(C.TM_EINVAL), "Port is out of range")
	}
	co.port = C.uint(o.Port)
	if co.max_mx, err = cuint(o.MaxMX, "MaxMX"); err != nil {
		return nil, err
	}
	if co.max_addresses, err = cuint(o.MaxAddresses, "MaxAddresses"); err != nil {
		return nil, err
	}
	c := &Context{}
	if o.Log != nil {
		c.log = cgo.NewHandle(o.Log)
		C.tmgo_set_log(co, C.uintptr_t(c.log))
		co.log_level = C.int(o.LogLevel)
	}
	if cb := o.stsCallbacks(); cb != nil {
		c.stsCB = cb
		c.sts = cgo.NewHandle(cb)
		C.tmgo_set_sts(co, C.uintptr_t(c.sts), cbool(cb.fetch != nil), cbool(cb.store != nil),
			cbool(cb.lookup != nil))
	}
	rc := C.tm_context_new(&c.ptr, co)
	if rc != C.TM_OK {
		if c.log != 0 {
			c.log.Delete()
		}
		if c.sts != 0 {
			c.sts.Delete()
		}
		return nil, codeError(int(rc))
	}
	return c, nil
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// stsToC sets the MTA-STS fields of co (version 2) but the callbacks; the
// address string is C memory the caller frees.
func (o *ContextOptions) stsToC(co *C.tm_context_options) error {
	var err error
	co.mta_sts = C.int(o.MTASTS)
	if co.sts_cache_max, err = cuint(o.STSCacheMax, "STSCacheMax"); err != nil {
		return err
	}
	if co.sts_timeout_ms, err = ms(o.STSTimeout, "STSTimeout"); err != nil {
		return err
	}
	if o.STSHTTPSPort < 0 || o.STSHTTPSPort > 65535 {
		return newError(int(C.TM_EINVAL), "STSHTTPSPort is out of range")
	}
	co.sts_https_port = C.uint(o.STSHTTPSPort)
	if co.sts_https_address, err = cstr(o.STSHTTPSAddress); err != nil {
		return err
	}
	return nil
}

// stsCallbacks returns the MTA-STS callbacks of o, or nil when none is set.
func (o *ContextOptions) stsCallbacks() *stsCallbacks {
	if o.STSFetch == nil && o.STSStore == nil && o.STSLookup == nil {
		return nil
	}
	return &stsCallbacks{fetch: o.STSFetch, store: o.STSStore, lookup: o.STSLookup}
}

// stsOptions are the MTA-STS fields of a tm_context_options, read back.
type stsOptions struct {
	mode, cacheMax, timeoutMS, port int
	address                         string
	addressNull                     bool
	fetch, store, lookup            bool // the callback pointers are set
	fetchArg, cacheArg              bool // and their arguments
}

// stsRoundTrip converts the MTA-STS options to tm_context_options and
// reads the C fields back (for the tests).
func stsRoundTrip(o ContextOptions) (stsOptions, error) {
	var r stsOptions
	co := (*C.tm_context_options)(C.calloc(1, C.size_t(unsafe.Sizeof(C.tm_context_options{}))))
	if co == nil {
		return r, ErrNoMem
	}
	defer C.free(unsafe.Pointer(co))
	C.tm_context_options_init(co, C.TM_CONTEXT_OPTIONS_VERSION)
	if err := o.stsToC(co); err != nil {
		return r, err
	}
	defer C.free(unsafe.Pointer(co.sts_https_address))
	if cb := o.stsCallbacks(); cb != nil {
		h := cgo.NewHandle(cb)
		defer h.Delete()
		C.tmgo_set_sts(co, C.uintptr_t(h), cbool(cb.fetch != nil), cbool(cb.store != nil),
			cbool(cb.lookup != nil))
	}
	r.mode, r.cacheMax, r.timeoutMS = int(co.mta_sts), int(co.sts_cache_max), int(co.sts_timeout_ms)
	r.port = int(co.sts_https_port)
	r.addressNull = co.sts_https_address == nil
	r.address = C.GoString(co.sts_https_address)
	r.fetch, r.store, r.lookup = co.sts_fetch != nil, co.sts_store != nil, co.sts_lookup != nil
	r.fetchArg, r.cacheArg = co.sts_fetch_arg != nil, co.sts_cache_arg != nil
	return r, nil
}

// stsProbeResult is what stsProbe saw.
type stsProbeResult struct {
	fetchRC  int
	body     []byte
	fetchErr error // the callbacks' last error right after the fetch
	lookupRC int
	entry    string
	lastErr  error // after the store and the lookup
}

// stsProbe calls the C trampolines of o's MTA-STS callbacks as the library
// would: a fetch into a body buffer of bodySize bytes, a store of a fixed
// entry, and a lookup into a buffer of lookupSize (for the tests).
func stsProbe(o ContextOptions, domain string, bodySize, lookupSize int) stsProbeResult {
	var r stsProbeResult
	cb := o.stsCallbacks()
	if cb == nil {
		cb = &stsCallbacks{}
	}
	h := cgo.NewHandle(cb)
	defer h.Delete()
	d := C.CString(domain)
	defer C.free(unsafe.Pointer(d))
	url := C.CString("https://mta-sts." + domain + "/.well-known/mta-sts.txt")
	defer C.free(unsafe.Pointer(url))
	bbuf := (*C.char)(C.malloc(C.size_t(bodySize + 1)))
	lbuf := (*C.char)(C.malloc(C.size_t(lookupSize + 1)))
	defer C.free(unsafe.Pointer(bbuf))
	defer C.free(unsafe.Pointer(lbuf))
	var n C.size_t
	r.fetchRC = int(C.tmgo_probe_sts_fetch(C.uintptr_t(h), d, url, bbuf, C.size_t(bodySize), &n))
	if r.fetchRC == 0 {
		r.body = C.GoBytes(unsafe.Pointer(bbuf), C.int(n))
	}
	r.fetchErr = cb.lastError()
	e := C.CString("policy " + domain + " 1 0 0 0 none 86400 -")
	C.tmgo_probe_sts_store(C.uintptr_t(h), d, e)
	C.free(unsafe.Pointer(e))
	r.lookupRC = int(C.tmgo_probe_sts_lookup(C.uintptr_t(h), d, lbuf, C.size_t(lookupSize)))
	if r.lookupRC == 0 {
		r.entry = C.GoString(lbuf)
	}
	r.lastErr = cb.lastError()
	return r
}

// dnssecToC sets the DNSSEC and DANE fields of co (version 2); the
// resolver string is C memory the caller frees.
func (o *ContextOptions) dnssecToC(co *C.tm_context_options) error {
	var err error
	if co.dnssec_resolver, err = cstr(o.DNSSECResolver); err != nil {
		return err
	}
	co.dnssec_trust_resolver = C.TM_UNSET
	if o.DNSSECTrustResolver {
		co.dnssec_trust_resolver = C.TM_ON
	}
	co.dane = C.int(o.DANE)
	return nil
}

// dnssecRoundTrip converts the DNSSEC options to tm_context_options and
// reads the C fields back (for the tests); null when dnssec_resolver is NULL.
func dnssecRoundTrip(o ContextOptions) (resolver string, null bool, trust, dane int, err error) {
	co := (*C.tm_context_options)(C.calloc(1, C.size_t(unsafe.Sizeof(C.tm_context_options{}))))
	if co == nil {
		return "", false, 0, 0, ErrNoMem
	}
	defer C.free(unsafe.Pointer(co))
	C.tm_context_options_init(co, C.TM_CONTEXT_OPTIONS_VERSION)
	if err = o.dnssecToC(co); err != nil {
		return "", false, 0, 0, err
	}
	null = co.dnssec_resolver == nil
	resolver = C.GoString(co.dnssec_resolver)
	C.free(unsafe.Pointer(co.dnssec_resolver))
	return resolver, null, int(co.dnssec_trust_resolver), int(co.dane), nil
}

// use returns the C context under a read lock; call done() after.
func (c *Context) use() (*C.tm_context, func(), error) {
	if c == nil {
		return nil, nil, newError(int(C.TM_EINVAL), "nil Context")
	}
	c.mu.RLock()
	if c.ptr == nil {
		c.mu.RUnlock()
		return nil, nil, newError(int(C.TM_ESTATE), "the context is closed")
	}
	return c.ptr, c.mu.RUnlock, nil
}

// Close releases the context (tm_context_free).  It waits for calls running
// on other goroutines and returns ErrState while a Session on it is open.
// Closing twice is a no-op.
func (c *Context) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr == nil {
		return nil
	}
	c.smu.Lock()
	n := c.sessions
	c.smu.Unlock()
	if n > 0 {
		return newError(int(C.TM_ESTATE), fmt.Sprintf("%d session(s) still open", n))
	}
	C.tm_context_free(c.ptr)
	c.ptr = nil
	if c.log != 0 {
		c.log.Delete()
		c.log = 0
	}
	if c.sts != 0 {
		c.sts.Delete()
		c.sts = 0
	}
	return nil
}

// STSCallbackError returns the last error an MTA-STS callback (STSFetch,
// STSStore, STSLookup) returned or panicked with, or nil.
func (c *Context) STSCallbackError() error {
	if c == nil || c.stsCB == nil {
		return nil
	}
	return c.stsCB.lastError()
}

// ReloadCA reads the trust store again from where the options named it
// (CAFile, CAPath, or the system store), for when certificates rotate
// (tm_context_reload_ca).  Safe while other goroutines deliver with the
// context: a handshake under way finishes with the store it began with,
// every later one uses the new store, and no TLS session verified under the
// old store is resumed.  Errors: ErrCAFile (nothing readable, or no
// certificate found; the old store then stays in use), ErrNoMem, ErrState
// (closed context), ErrInvalid (nil Context).
func (c *Context) ReloadCA() error {
	p, done, err := c.use()
	if err != nil {
		return err
	}
	defer done()
	return codeError(int(C.tm_context_reload_ca(p)))
}

// ---------------------------------------------------------------------------
// Settings

func (c *Context) domainCall(domain string, f func(*C.tm_context, *C.char) C.int) error {
	p, done, err := c.use()
	if err != nil {
		return err
	}
	defer done()
	d, err := cstrReq(domain)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(d))
	return codeError(int(f(p, d)))
}

// SetDomainPolicy sets (replaces) the connection settings of a sending
// domain (tm_domain_policy_set); Unset flags fall through to the default.
func (c *Context) SetDomainPolicy(sendingDomain string, p Policy) error {
	var cp C.tm_policy
	p.toC(&cp)
	return c.domainCall(sendingDomain, func(x *C.tm_context, d *C.char) C.int {
		return C.tm_domain_policy_set(x, d, &cp)
	})
}

// DomainPolicy returns the settings of a sending domain, or ErrNotFound.
func (c *Context) DomainPolicy(sendingDomain string) (Policy, error) {
	var cp C.tm_policy
	err := c.domainCall(sendingDomain, func(x *C.tm_context, d *C.char) C.int {
		return C.tm_domain_policy_get(x, d, &cp)
	})
	if err != nil {
		return Policy{}, err
	}
	return policyFromC(&cp), nil
}

// DeleteDomainPolicy removes the settings of a sending domain, or returns
// ErrNotFound.
func (c *Context) DeleteDomainPolicy(sendingDomain string) error {
	return c.domainCall(sendingDomain, func(x *C.tm_context, d *C.char) C.int {
		return C.tm_domain_policy_delete(x, d)
	})
}

// SetRecipientFloor sets the floor of a recipient domain; FloorNone removes it.
func (c *Context) SetRecipientFloor(recipientDomain string, f Floor) error {
	return c.domainCall(recipientDomain, func(x *C.tm_context, d *C.char) C.int {
		return C.tm_recipient_floor_set(x, d, C.int(f))
	})
}

// RecipientFloor returns the floor of a recipient domain (FloorNone if unset).
func (c *Context) RecipientFloor(recipientDomain string) (Floor, error) {
	var f C.int
	err := c.domainCall(recipientDomain, func(x *C.tm_context, d *C.char) C.int {
		return C.tm_recipient_floor_get(x, d, &f)
	})
	return Floor(f), err
}

// Settings lists every setting in the settings-file format (tm_settings_list).
func (c *Context) Settings() (string, error) {
	return c.listText(func(p *C.tm_context, buf *C.char, size C.size_t) C.int {
		return C.tm_settings_list(p, buf, size)
	})
}

// listText runs a tm_*_list function (snprintf semantics) with a buffer
// that grows until the whole text fits.
func (c *Context) listText(list func(*C.tm_context, *C.char, C.size_t) C.int) (string, error) {
	p, done, err := c.use()
	if err != nil {
		return "", err
	}
	defer done()
	size := C.size_t(4096)
	for {
		buf := (*C.char)(C.malloc(size))
		if buf == nil {
			return "", ErrNoMem
		}
		n := list(p, buf, size)
		if n < 0 {
			C.free(unsafe.Pointer(buf))
			return "", codeError(int(n))
		}
		if C.size_t(n) < size {
			s := C.GoStringN(buf, n)
			C.free(unsafe.Pointer(buf))
			return s, nil
		}
		C.free(unsafe.Pointer(buf))
		size = C.size_t(n) + 1 // the text grew between the two calls
	}
}

// LoadSettings reads a settings file (tm_settings_load), applied only when
// the whole file is valid; replace clears both tables first.  A syntax
// error is an *Error with Code TM_ESYNTAX and the 1-based Line.
func (c *Context) LoadSettings(path string, replace bool) error {
	r := C.int(0)
	if replace {
		r = 1
	}
	return c.loadFile(path, func(p *C.tm_context, cp *C.char, line *C.int) C.int {
		return C.tm_settings_load(p, cp, r, line)
	})
}

// pathCall runs a tm_ function on the context with path as a C string.
func (c *Context) pathCall(path string, fn func(*C.tm_context, *C.char) C.int) error {
	p, done, err := c.use()
	if err != nil {
		return err
	}
	defer done()
	cp, err := cstrReq(path)
	if err != nil {
		return err
	}
	defer C.free(unsafe.Pointer(cp))
	return codeError(int(fn(p, cp)))
}

// loadFile runs a tm_*_load function: a syntax error is an *Error with
// Code TM_ESYNTAX and the 1-based Line.
func (c *Context) loadFile(path string, load func(*C.tm_context, *C.char, *C.int) C.int) error {
	var line C.int
	err := c.pathCall(path, func(p *C.tm_context, cp *C.char) C.int {
		return load(p, cp, &line)
	})
	var e *Error
	if errors.As(err, &e) && e.Code == int(C.TM_ESYNTAX) {
		return &Error{Code: e.Code, Msg: fmt.Sprintf("%s:%d: %s", path, int(line), strerror(e.Code)), Line: int(line)}
	}
	return err
}

// SaveSettings writes both tables to path atomically (tm_settings_save).
func (c *Context) SaveSettings(path string) error {
	return c.pathCall(path, func(p *C.tm_context, cp *C.char) C.int {
		return C.tm_settings_save(p, cp)
	})
}

// ---------------------------------------------------------------------------
// MTA-STS policy cache

// STSCacheList returns the cached MTA-STS policies in the cache file
// format (tm_sts_cache_list), one line per policy domain:
//
//	policy DOMAIN ID FETCHED EXPIRES USED MODE MAX_AGE MX,MX,...
func (c *Context) STSCacheList() (string, error) {
	return c.listText(func(p *C.tm_context, buf *C.char, size C.size_t) C.int {
		return C.tm_sts_cache_list(p, buf, size)
	})
}

// STSCacheLoad adds the policies of a cache file written by STSCacheSave
// to the context's cache (tm_sts_cache_load): each replaces the cached one
// of its domain, expired ones are dropped.  All or nothing: a malformed
// line changes nothing and is an *Error with Code TM_ESYNTAX and the
// 1-based Line (errors.Is(err, ErrSyntax)); an unreadable file is ErrIO.
func (c *Context) STSCacheLoad(path string) error {
	return c.loadFile(path, func(p *C.tm_context, cp *C.char, line *C.int) C.int {
		return C.tm_sts_cache_load(p, cp, line)
	})
}

// STSCacheSave writes the cached MTA-STS policies to path atomically
// (tm_sts_cache_save: a temporary file, then a rename), for the next start.
func (c *Context) STSCacheSave(path string) error {
	return c.pathCall(path, func(p *C.tm_context, cp *C.char) C.int {
		return C.tm_sts_cache_save(p, cp)
	})
}

// ---------------------------------------------------------------------------
// Messages

// Message is one message (tm_message).  Give the content either in Data or
// as a Reader, streamed in chunks (Reader wins when both are set).
type Message struct {
	From          string   // envelope sender; "" is the null reverse-path
	To            []string // recipients of one domain, at least one (no upper limit)
	Data          []byte
	Reader        io.Reader
	SendingDomain string // whose settings apply ("" = the domain of From)
}

// SessionOptions are tm_session_options: deliver to Host (whose name the
// certificate must match) instead of the MX hosts, on Port.
type SessionOptions struct {
	Host string
	Port int
}

// cMessage is a tm_message in C memory with its strings and the C array
// that receives the per-recipient outcomes during the call.
type cMessage struct {
	m      *C.tm_message
	to     **C.char
	nto    int
	rcpts  *C.tm_rcpt_status
	strs   []*C.char
	handle cgo.Handle
	rd     *reader
}

func newCMessage(msg *Message) (*cMessage, error) {
	if len(msg.To) == 0 {
		return nil, newError(int(C.TM_EINVAL), "no recipients")
	}
	cm := &cMessage{}
	cm.m = (*C.tm_message)(C.calloc(1, C.size_t(unsafe.Sizeof(C.tm_message{}))))
	cm.to = C.tmgo_strv(C.size_t(len(msg.To)))
	cm.rcpts = (*C.tm_rcpt_status)(C.calloc(C.size_t(len(msg.To)), C.size_t(unsafe.Sizeof(C.tm_rcpt_status{}))))
	if cm.m == nil || cm.to == nil || cm.rcpts == nil {
		cm.free()
		return nil, ErrNoMem
	}
	C.tm_message_init(cm.m, C.TM_MESSAGE_VERSION)
	cm.m.rcpt_status = cm.rcpts
	cm.m.rcpt_status_cap = C.size_t(len(msg.To))
	for i, t := range msg.To {
		s, err := cstrReq(t)
		if err != nil {
			cm.free()
			return nil, err
		}
		C.tmgo_strv_set(cm.to, C.size_t(i), s)
		cm.nto = i + 1
	}
	C.tmgo_set_to(cm.m, cm.to, C.size_t(len(msg.To)))
	from, err := cstrReq(msg.From)
	if err != nil {
		cm.free()
		return nil, err
	}
	cm.strs = append(cm.strs, from)
	cm.m.from = from
	if msg.SendingDomain != "" {
		sd, err := cstrReq(msg.SendingDomain)
		if err != nil {
			cm.free()
			return nil, err
		}
		cm.strs = append(cm.strs, sd)
		cm.m.sending_domain = sd
	}
	if msg.Reader != nil {
		cm.rd = &reader{r: msg.Reader}
		cm.handle = cgo.NewHandle(cm.rd)
		C.tmgo_set_reader(cm.m, C.uintptr_t(cm.handle))
	}
	return cm, nil
}

// data returns the in-memory content for the cgo call (nil when streaming).
func (cm *cMessage) data(msg *Message) (unsafe.Pointer, C.size_t) {
	if cm.rd != nil || len(msg.Data) == 0 {
		return nil, 0
	}
	return unsafe.Pointer(&msg.Data[0]), C.size_t(len(msg.Data))
}

func (cm *cMessage) free() {
	C.tmgo_strv_free(cm.to, C.size_t(cm.nto))
	C.free(unsafe.Pointer(cm.rcpts))
	for _, s := range cm.strs {
		C.free(unsafe.Pointer(s))
	}
	C.free(unsafe.Pointer(cm.m))
	if cm.handle != 0 {
		cm.handle.Delete()
	}
}

// result turns a call's return code into the error, wrapping the reader's
// error for TM_EREAD.
func (cm *cMessage) result(rc C.int) error {
	err := codeError(int(rc))
	if e, ok := err.(*Error); ok && cm.rd != nil && cm.rd.err != nil {
		e.Err = cm.rd.err
		e.Msg = strerror(e.Code) + ": " + cm.rd.err.Error()
	}
	return err
}

func sessionOptions(o *SessionOptions) (*C.tm_session_options, func(), error) {
	if o == nil {
		return nil, func() {}, nil
	}
	so := (*C.tm_session_options)(C.calloc(1, C.size_t(unsafe.Sizeof(C.tm_session_options{}))))
	if so == nil {
		return nil, nil, ErrNoMem
	}
	C.tm_session_options_init(so, C.TM_SESSION_OPTIONS_VERSION)
	h, err := cstr(o.Host)
	if err != nil {
		C.free(unsafe.Pointer(so))
		return nil, nil, err
	}
	if o.Port < 0 || o.Port > 65535 {
		C.free(unsafe.Pointer(h))
		C.free(unsafe.Pointer(so))
		return nil, nil, newError(int(C.TM_EINVAL), "Port is out of range")
	}
	so.host = h
	so.port = C.uint(o.Port)
	return so, func() { C.free(unsafe.Pointer(h)); C.free(unsafe.Pointer(so)) }, nil
}

// Deliver delivers one message (tm_deliver): finds the MX hosts of the
// recipients' domain (or uses opts.Host), applies the policy (nil: nothing
// set, resolved against the sending domain's settings and the recipient
// floor), sends and closes, failing over to the next MX host before the
// end of data.  Blocks.  The status is always filled; err is nil only when
// every recipient was delivered, else an *Error of the status's class
// (errors.Is(err, ErrResultDeferred), ErrResultUncertain, ErrResultBounced).
func Deliver(ctx *Context, msg Message, policy *Policy, opts *SessionOptions) (DeliveryStatus, error) {
	p, done, err := ctx.use()
	if err != nil {
		return DeliveryStatus{}, err
	}
	defer done()
	cm, err := newCMessage(&msg)
	if err != nil {
		return DeliveryStatus{}, err
	}
	defer cm.free()
	so, sofree, err := sessionOptions(opts)
	if err != nil {
		return DeliveryStatus{}, err
	}
	defer sofree()
	var cp *C.tm_policy
	if policy != nil {
		cp = new(C.tm_policy)
		policy.toC(cp)
	}
	st := newCStatus()
	data, size := cm.data(&msg)
	rc := C.tmgo_deliver(p, cm.m, data, size, cp, so, st)
	status := statusFromC(st, cm.rcpts, len(msg.To))
	return status, withStatus(cm.result(rc), status)
}

// ---------------------------------------------------------------------------
// Sessions

// Session is one SMTP connection (tm_session) that carries many messages:
// OpenSession, StartTLS, Send..., Close.
type Session struct {
	mu  sync.Mutex
	ctx *Context
	ptr *C.tm_session
}

// OpenSession opens a session to domain (tm_session_open): finds its MX
// hosts (or uses opts.Host), connects to the first reachable one, reads the
// greeting and says EHLO.  The status says which host; on error the
// session is nil and the status says why, and the *Error has its class
// (ErrResultBounced for ErrNullMX and ErrNoDomain, ErrResultDeferred when
// no host could be reached).  Blocks.
func OpenSession(ctx *Context, domain string, opts *SessionOptions) (*Session, DeliveryStatus, error) {
	p, done, err := ctx.use()
	if err != nil {
		return nil, DeliveryStatus{}, err
	}
	defer done()
	d, err := cstrReq(domain)
	if err != nil {
		return nil, DeliveryStatus{}, err
	}
	defer C.free(unsafe.Pointer(d))
	so, sofree, err := sessionOptions(opts)
	if err != nil {
		return nil, DeliveryStatus{}, err
	}
	defer sofree()
	st := newCStatus()
	s := &Session{ctx: ctx}
	rc := C.tm_session_open(&s.ptr, p, d, so, st)
	if rc != C.TM_OK {
		status := statusFromC(st, nil, 0)
		return nil, status, withStatus(codeError(int(rc)), status)
	}
	ctx.smu.Lock()
	ctx.sessions++
	ctx.smu.Unlock()
	return s, statusFromC(st, nil, 0), nil
}

// StartTLS applies the policy to the session (tm_starttls): STARTTLS,
// verification, plaintext fallback, or moving on to the next MX when TLS is
// required.  The status gives the TLS outcome.  ErrTLSRequired when no MX
// gave TLS (only Close remains), which also matches ErrResultDeferred; any
// other *Error has the status's class too.  Blocks.
func (s *Session) StartTLS(policy *Policy) (DeliveryStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil {
		return DeliveryStatus{}, newError(int(C.TM_ESTATE), "the session is closed")
	}
	var cp *C.tm_policy
	if policy != nil {
		cp = new(C.tm_policy)
		policy.toC(cp)
	}
	st := newCStatus()
	rc := C.tm_starttls(s.ptr, cp, st)
	status := statusFromC(st, nil, 0)
	return status, withStatus(codeError(int(rc)), status)
}

// Send sends one message over the session (tm_send); the session stays
// usable after a refused message.  Returns like Deliver.  Blocks.
func (s *Session) Send(msg Message) (DeliveryStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil {
		return DeliveryStatus{}, newError(int(C.TM_ESTATE), "the session is closed")
	}
	cm, err := newCMessage(&msg)
	if err != nil {
		return DeliveryStatus{}, err
	}
	defer cm.free()
	st := newCStatus()
	data, size := cm.data(&msg)
	rc := C.tmgo_send(s.ptr, cm.m, data, size, st)
	status := statusFromC(st, cm.rcpts, len(msg.To))
	return status, withStatus(cm.result(rc), status)
}

// Close says QUIT and frees the session (tm_session_close).  Closing a nil
// or closed session is a no-op.
func (s *Session) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil {
		return nil
	}
	C.tm_session_close(s.ptr)
	s.ptr = nil
	s.ctx.smu.Lock()
	s.ctx.sessions--
	s.ctx.smu.Unlock()
	return nil
}
