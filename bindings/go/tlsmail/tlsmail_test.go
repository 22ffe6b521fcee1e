package tlsmail

// Unit tests need only the library; delivery tests need the real peers
// (run through tests/peers/peers.py, which sets TM_TEST_*).  Without
// TM_TEST_PORT they are skipped, unless CI=true, where they fail.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

var body = []byte("Subject: tlsmail go test\r\nFrom: sender@tm.test\r\n\r\nHello from Go.\r\n")

func TestVersion(t *testing.T) {
	if Version() == "" || !strings.Contains(TLSBackend(), "TLS") {
		t.Fatalf("version %q backend %q", Version(), TLSBackend())
	}
}

func TestPolicyFlags(t *testing.T) {
	for _, f := range []Flag{Unset, On, Off} {
		p := Policy{f, f, f}
		got := policyRoundTrip(p)
		if got != p {
			t.Fatalf("round trip %v -> %v", p, got)
		}
	}
	if FlagOf(true) != On || FlagOf(false) != Off || !On.IsOn() || Off.IsOn() || Unset.IsOn() {
		t.Fatal("FlagOf / IsOn")
	}
	if Unset.String() != "unset" || On != 1 || Off != -1 {
		t.Fatal("flag values must be TM_UNSET/TM_ON/TM_OFF")
	}
}

func TestErrors(t *testing.T) {
	ctx, err := NewContext(ContextOptions{HeloName: "client.tm.test"})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()

	st, err := Deliver(ctx, Message{From: "a@tm.test", To: []string{"bad\r\n@tm.test"}, Data: body}, nil, nil)
	if !errors.Is(err, ErrAddress) || st.Result != Bounced {
		t.Fatalf("bad address: %v %v", err, st.Result)
	}
	var te *Error
	if !errors.As(err, &te) || te.Code != -3 {
		t.Fatalf("errors.As: %#v", err)
	}
	if _, err = Deliver(ctx, Message{From: "a@tm.test", Data: body}, nil, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no recipients: %v", err)
	}
	// No recipient cap any more (0.1 refused 51 with ErrTooMany): 120
	// recipients reach the network, here a loopback port that refuses.
	to := make([]string, 120)
	for i := range to {
		to[i] = fmt.Sprintf("r%d@tm.test", i)
	}
	port := refusingPort(t)
	st, err = Deliver(ctx, Message{From: "a@tm.test", To: to, Data: body}, nil, &SessionOptions{Host: "127.0.0.1", Port: port})
	if !errors.Is(err, ErrConnect) || st.Result != Deferred {
		t.Fatalf("120 recipients to a closed port: %v %v", err, st.Result)
	}
	if _, err = NewContext(ContextOptions{CAFile: "/nonexistent/ca.pem"}); !errors.Is(err, ErrCAFile) {
		t.Fatalf("CA file: %v", err)
	}
	// A CAPath without a CA certificate, or missing: ErrCAFile (CAPath
	// reaches the library; the system store is not used instead).
	junk := t.TempDir()
	os.WriteFile(filepath.Join(junk, "junk.pem"), []byte("not a certificate\n"), 0o644)
	for _, dir := range []string{t.TempDir(), junk, filepath.Join(junk, "missing")} {
		if _, err = NewContext(ContextOptions{CAPath: dir}); !errors.Is(err, ErrCAFile) {
			t.Fatalf("CAPath %s: %v", dir, err)
		}
	}
	if _, err = NewContext(ContextOptions{CAPath: "a\x00b"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("CAPath with NUL: %v", err)
	}
	if err = ctx.ReloadCA(); err != nil { // the system store, read again
		t.Fatalf("ReloadCA, system store: %v", err)
	}
	if _, err = NewContext(ContextOptions{Port: 70000}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("port: %v", err)
	}
	if errors.Is(ErrTLS, ErrTLSRequired) {
		t.Fatal("distinct codes must not match")
	}
	c2, _ := NewContext(ContextOptions{})
	c2.Close()
	if err = c2.Close(); err != nil {
		t.Fatal("second Close", err)
	}
	if _, err = Deliver(c2, Message{From: "a@tm.test", To: []string{"b@tm.test"}}, nil, nil); !errors.Is(err, ErrState) {
		t.Fatalf("closed context: %v", err)
	}
	if err = c2.ReloadCA(); !errors.Is(err, ErrState) {
		t.Fatalf("ReloadCA on a closed context: %v", err)
	}
	var nilCtx *Context
	if err = nilCtx.ReloadCA(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ReloadCA on nil: %v", err)
	}
}

// refusingPort holds a loopback TCP port bound but never listening for the
// rest of the test: connections to it are refused, and no other process
// can listen there meanwhile.
func refusingPort(t *testing.T) int {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*syscall.SockaddrInet4).Port
}

func TestLayoutMatchesLibrary(t *testing.T) {
	layout, sizes, err := libraryLayout()
	if err != nil {
		t.Fatal(err)
	}
	if len(layout) != len(cStructs) {
		t.Fatalf("the library describes %d structs, the binding uses %d", len(layout), len(cStructs))
	}
	for name, typ := range cStructs {
		if why := layoutMismatch(name, typ, layout, sizes); why != "" {
			t.Fatal(why)
		}
	}
}

// Scratch copies of tm_policy and tm_session_options, as a header with a
// field moved or retyped would make cgo compile them.
type swappedPolicy struct {
	version             uint32
	skip_verify         int32
	require_tls         int32
	keep_unverified_tls int32
}

type widePortOptions struct {
	version uint32
	host    *byte
	port    uint64
}

type missingPortOptions struct {
	version uint32
	host    *byte
}

func TestLayoutCheckRejectsMismatch(t *testing.T) {
	layout, sizes, err := libraryLayout()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, want string
		typ        reflect.Type
	}{
		{"tm_policy", "field 1", reflect.TypeOf(swappedPolicy{})},
		{"tm_session_options", "offset", reflect.TypeOf(widePortOptions{})},
		{"tm_session_options", "lacks port", reflect.TypeOf(missingPortOptions{})},
		{"tm_no_such_struct", "does not describe", reflect.TypeOf(swappedPolicy{})},
	}
	for _, c := range cases {
		why := layoutMismatch(c.name, c.typ, layout, sizes)
		if !strings.Contains(why, c.want) {
			t.Errorf("%s as %v: got %q, want a mismatch mentioning %q", c.name, c.typ, why, c.want)
		}
	}
	if _, _, err := parseLayout("tm_x eight a@0:4\n"); err == nil {
		t.Error("malformed layout accepted")
	}
}

// The fields added last (tls_resumed, the DANE and the MTA-STS fields of
// the status, ca_path, the DNSSEC and the MTA-STS options of the context
// options) are where the
// library has them, and a header without any trailing one of them (the
// layout before) and a library without it are each refused.  Without an
// int at the end the struct may even keep its size (on LP64 it fits in what
// was tail padding): only the field-by-field comparison sees it.
func TestLayoutNewFields(t *testing.T) {
	layout, sizes, err := libraryLayout()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		new  []string
	}{
		{"tm_delivery_status", []string{"tls_resumed", "dane", "mx_dnssec", "cert_verified_by", "dane_tlsa",
			"mta_sts", "mta_sts_id", "mta_sts_cached", "mta_sts_would_refuse", "mta_sts_error"}},
		{"tm_context_options", []string{"ca_path", "dnssec_resolver", "dnssec_trust_resolver", "dane",
			"mta_sts", "sts_fetch", "sts_fetch_arg", "sts_store", "sts_lookup", "sts_cache_arg",
			"sts_cache_max", "sts_timeout_ms", "sts_https_address", "sts_https_port"}},
	} {
		fl := layout[c.name]
		typ := cStructs[c.name]
		var named []reflect.StructField // without the padding cgo made explicit
		for i := 0; i < typ.NumField(); i++ {
			if f := typ.Field(i); f.Name != "_" {
				named = append(named, f)
			}
		}
		n := len(c.new)
		if len(fl) < n || len(named) < n {
			t.Fatalf("%s: too few fields: %v", c.name, fl)
		}
		for i, want := range c.new {
			if got := fl[len(fl)-n+i].name; got != want {
				t.Fatalf("%s: the library's field %d from the end is %s, not %s", c.name, n-i, got, want)
			}
			if got := named[len(named)-n+i].Name; got != want {
				t.Fatalf("%s: cgo's field %d from the end is %s, not %s", c.name, n-i, got, want)
			}
		}
		for k := 1; k <= n; k++ {
			missing := c.new[n-k]
			// An older header: cgo's struct without its last k fields.
			fields := append([]reflect.StructField(nil), named[:len(named)-k]...)
			for i := range fields {
				fields[i].Offset = 0 // StructOf lays them out again
			}
			old := reflect.StructOf(fields)
			if why := layoutMismatch(c.name, old, layout, sizes); !strings.Contains(why, "lacks "+missing) {
				t.Errorf("%s without %s: got %q", c.name, missing, why)
			}
			// An older library: its layout without them.
			oldLib := map[string][]layoutField{c.name: fl[:len(fl)-k]}
			if why := layoutMismatch(c.name, typ, oldLib, sizes); !strings.Contains(why, missing) ||
				!strings.Contains(why, "no such field") {
				t.Errorf("%s against a library without %s: got %q", c.name, missing, why)
			}
		}
	}
	byName := map[string]layoutField{}
	for _, f := range layout["tm_delivery_status"] {
		byName[f.name] = f
	}
	if byName["dane_tlsa"].size != 16 || byName["dane"].size != 4 || byName["cert_verified_by"].size != 4 {
		t.Fatalf("DANE status fields: %+v", byName)
	}
	if byName["mta_sts_id"].size != 33 || byName["mta_sts_error"].size != 512 || byName["mta_sts"].size != 4 ||
		byName["mta_sts_cached"].size != 4 || byName["mta_sts_would_refuse"].size != 4 {
		t.Fatalf("MTA-STS status fields: %+v", byName)
	}
	opts := map[string]layoutField{}
	for _, f := range layout["tm_context_options"] {
		opts[f.name] = f
	}
	ptr := unsafe.Sizeof(uintptr(0))
	for _, n := range []string{"sts_fetch", "sts_fetch_arg", "sts_store", "sts_lookup", "sts_cache_arg", "sts_https_address"} {
		if opts[n].size != ptr {
			t.Errorf("tm_context_options.%s: %d bytes, want a pointer", n, opts[n].size)
		}
	}
	for _, n := range []string{"mta_sts", "sts_cache_max", "sts_timeout_ms", "sts_https_port"} {
		if opts[n].size != 4 {
			t.Errorf("tm_context_options.%s: %d bytes, want 4", n, opts[n].size)
		}
	}
}

func TestEmptyStatusJSON(t *testing.T) {
	var st DeliveryStatus
	var m map[string]interface{}
	if err := json.Unmarshal([]byte(st.JSON()), &m); err != nil {
		t.Fatal(err)
	}
	if m["result"] != "none" || m["tls"] != false || m["tls-resumed"] != false || st.TLSResumed {
		t.Fatalf("%v", m)
	}
}

func TestStatusDANEFields(t *testing.T) {
	// Empty (Go-built and library-initialised): DANE off, nothing verified.
	for _, st := range []DeliveryStatus{{}, statusRoundTrip(0, 0, 0, 0, "")} {
		if st.raw != nil && (st.DANE != "off" || st.MXDNSSEC || st.CertVerifiedBy != "" || st.DANETLSA != "") {
			t.Fatalf("empty status: %+v", st)
		}
		var m map[string]interface{}
		if err := json.Unmarshal([]byte(st.JSON()), &m); err != nil {
			t.Fatal(err)
		}
		if m["dane"] != "off" || m["mx-dnssec"] != false || m["certificate-verified-by"] != "" || m["dane-tlsa"] != "" {
			t.Fatalf("empty status JSON: %v", m)
		}
	}
	// The names are the library's, value for value.
	for v, name := range []string{"off", "insecure", "no-tlsa", "verified", "tlsa-unusable", "failed", "pending"} {
		if got := statusRoundTrip(v, 0, 0, 0, "").DANE; got != name {
			t.Errorf("tm_dane %d: %q, want %q", v, got, name)
		}
	}
	for v, name := range []string{"", "pkix", "dane"} {
		verified := 0
		if v > 0 {
			verified = 1
		}
		if got := statusRoundTrip(0, 0, verified, v, "").CertVerifiedBy; got != name {
			t.Errorf("tm_verified_by %d: %q, want %q", v, got, name)
		}
	}
	st := statusRoundTrip(3, 1, 1, 2, "3 1 1")
	if st.DANE != "verified" || !st.MXDNSSEC || st.CertVerifiedBy != "dane" || st.DANETLSA != "3 1 1" {
		t.Fatalf("DANE-verified status: %+v", st)
	}
	var m map[string]interface{}
	b, _ := json.Marshal(st)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["dane"] != "verified" || m["mx-dnssec"] != true || m["certificate-verified-by"] != "dane" || m["dane-tlsa"] != "3 1 1" {
		t.Fatalf("DANE-verified JSON: %s", b)
	}
}

func TestStatusMTASTSFields(t *testing.T) {
	// Empty (Go-built and library-initialised): MTA-STS off.
	for _, st := range []DeliveryStatus{{}, statusSTSRoundTrip(0, "", 0, 0, "")} {
		if st.raw != nil && (st.MTASTS != "off" || st.MTASTSID != "" || st.MTASTSCached || st.MTASTSWouldRefuse || st.MTASTSError != "") {
			t.Fatalf("empty status: %+v", st)
		}
		var m map[string]interface{}
		if err := json.Unmarshal([]byte(st.JSON()), &m); err != nil {
			t.Fatal(err)
		}
		if m["mta-sts"] != "off" || m["mta-sts-id"] != "" || m["mta-sts-cached"] != false ||
			m["mta-sts-would-refuse"] != false || m["mta-sts-error"] != "" {
			t.Fatalf("empty status JSON: %v", m)
		}
	}
	// The names are the library's, value for value.
	names := []string{"off", "no-policy", "none", "testing", "enforce", "fetch-failed"}
	modes := []MTASTSMode{MTASTSOff, MTASTSNoPolicy, MTASTSNone, MTASTSTesting, MTASTSEnforce, MTASTSFetchFailed}
	for v, name := range names {
		if got := statusSTSRoundTrip(v, "", 0, 0, "").MTASTS; got != name {
			t.Errorf("tm_mta_sts %d: %q, want %q", v, got, name)
		}
		if int(modes[v]) != v || modes[v].String() != name {
			t.Errorf("MTASTSMode %d: %d %q", v, modes[v], modes[v].String())
		}
	}
	why := `mx-other.example matches no "mx" of the policy`
	st := statusSTSRoundTrip(int(MTASTSTesting), "20261201T000000", 1, 1, why)
	if st.MTASTS != "testing" || st.MTASTSID != "20261201T000000" || !st.MTASTSCached || !st.MTASTSWouldRefuse || st.MTASTSError != why {
		t.Fatalf("testing status: %+v", st)
	}
	var m map[string]interface{}
	b, _ := json.Marshal(st)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["mta-sts"] != "testing" || m["mta-sts-id"] != "20261201T000000" || m["mta-sts-cached"] != true ||
		m["mta-sts-would-refuse"] != true || m["mta-sts-error"] != why {
		t.Fatalf("testing JSON: %s", b)
	}
	// The longest id and error fit, NUL-terminated.
	st = statusSTSRoundTrip(int(MTASTSEnforce), strings.Repeat("A", 40), 0, 0, strings.Repeat("e", 600))
	if st.MTASTSID != strings.Repeat("A", 32) || len(st.MTASTSError) != 511 {
		t.Fatalf("long fields: %q %d", st.MTASTSID, len(st.MTASTSError))
	}
}

func TestMTASTSOptions(t *testing.T) {
	cases := []struct {
		o    ContextOptions
		want stsOptions
	}{
		{ContextOptions{}, stsOptions{addressNull: true}},
		{ContextOptions{MTASTS: Off}, stsOptions{mode: -1, addressNull: true}},
		{ContextOptions{MTASTS: On}, stsOptions{mode: 1, addressNull: true}},
		{ContextOptions{STSCacheMax: 10, STSTimeout: 1500 * time.Millisecond}, stsOptions{cacheMax: 10, timeoutMS: 1500, addressNull: true}},
		{ContextOptions{STSTimeout: time.Microsecond}, stsOptions{timeoutMS: 1, addressNull: true}}, // rounded up
		{ContextOptions{STSHTTPSAddress: "127.0.0.1", STSHTTPSPort: 8443}, stsOptions{address: "127.0.0.1", port: 8443}},
		{ContextOptions{STSFetch: func(string, string) ([]byte, error) { return nil, nil }},
			stsOptions{addressNull: true, fetch: true, fetchArg: true}},
		{ContextOptions{STSStore: func(string, string) {}},
			stsOptions{addressNull: true, store: true, cacheArg: true}},
		{ContextOptions{STSLookup: func(string) (string, bool) { return "", false }},
			stsOptions{addressNull: true, lookup: true, cacheArg: true}},
	}
	for i, c := range cases {
		got, err := stsRoundTrip(c.o)
		if err != nil || got != c.want {
			t.Errorf("case %d: got %+v err=%v, want %+v", i, got, err, c.want)
		}
	}
	for _, o := range []ContextOptions{
		{STSHTTPSPort: 65536}, {STSHTTPSPort: -1}, {STSCacheMax: -1}, {STSTimeout: -time.Second},
		{STSHTTPSAddress: "127.0.0.1\x00"},
	} {
		if _, err := stsRoundTrip(o); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v, want ErrInvalid", o, err)
		}
		if ctx, err := NewContext(o); !errors.Is(err, ErrInvalid) {
			t.Errorf("NewContext(%+v): %v, want ErrInvalid", o, err)
			ctx.Close()
		}
	}
	// The library checks the address: an IP address, not a name.
	for _, bad := range []string{"mta-sts.example.org", "not-an-ip", "127.0.0.1.1"} {
		ctx, err := NewContext(ContextOptions{STSHTTPSAddress: bad})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("STSHTTPSAddress %q: %v, want ErrInvalid", bad, err)
		}
		if err == nil {
			ctx.Close()
		}
	}
	for _, o := range []ContextOptions{
		{MTASTS: Off}, {MTASTS: On}, {STSCacheMax: 1, STSTimeout: 100 * time.Millisecond},
		{STSHTTPSAddress: "127.0.0.1", STSHTTPSPort: 8443}, {STSHTTPSAddress: "::1"},
		{STSFetch: func(string, string) ([]byte, error) { return nil, errors.New("none") },
			STSStore: func(string, string) {}, STSLookup: func(string) (string, bool) { return "", false }},
	} {
		ctx, err := NewContext(o)
		if err != nil {
			t.Errorf("NewContext(MTA-STS %v %d %v %q %d): %v", o.MTASTS, o.STSCacheMax, o.STSTimeout, o.STSHTTPSAddress, o.STSHTTPSPort, err)
			continue
		}
		if ctx.STSCallbackError() != nil {
			t.Errorf("a new context has a callback error: %v", ctx.STSCallbackError())
		}
		if err := ctx.Close(); err != nil {
			t.Error(err)
		}
	}
}

const testPolicy = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\nmax_age: 86400\r\n"

// The callbacks as the library calls them: through their C trampolines.
func TestSTSCallbacks(t *testing.T) {
	var seen []string
	db := map[string]string{}
	var mu sync.Mutex
	o := ContextOptions{
		STSFetch: func(domain, url string) ([]byte, error) {
			seen = append(seen, domain+" "+url)
			switch domain {
			case "example.org":
				return []byte(testPolicy), nil
			case "big.example":
				return make([]byte, 65537), nil
			case "panic.example":
				panic("boom")
			}
			return nil, errors.New("no policy")
		},
		STSStore: func(domain, entry string) {
			mu.Lock()
			defer mu.Unlock()
			if domain == "panic.example" {
				panic("store")
			}
			db[domain] = entry
		},
		STSLookup: func(domain string) (string, bool) {
			mu.Lock()
			defer mu.Unlock()
			if domain == "panic.example" {
				panic("lookup")
			}
			e, ok := db[domain]
			return e, ok
		},
	}
	r := stsProbe(o, "example.org", 65536, 1024)
	if r.fetchRC != 0 || string(r.body) != testPolicy || r.lastErr != nil {
		t.Fatalf("fetch: %+v", r)
	}
	if len(seen) != 1 || seen[0] != "example.org https://mta-sts.example.org/.well-known/mta-sts.txt" {
		t.Fatalf("fetch saw %q", seen)
	}
	// The probe stores an entry, then looks it up.
	want := "policy example.org 1 0 0 0 none 86400 -"
	if r.lookupRC != 0 || r.entry != want || db["example.org"] != want {
		t.Fatalf("store/lookup: %+v db=%q", r, db)
	}
	// An error, a body larger than the buffer, a panic: failures, recorded.
	for _, c := range []struct {
		domain string
		size   int
		want   string
	}{
		{"none.example", 65536, "no policy"},
		{"big.example", 65536, "more than 65536"},
		{"example.org", 10, "more than 10"},
		{"panic.example", 65536, "STSFetch panicked: boom"},
	} {
		r = stsProbe(o, c.domain, c.size, 1024)
		if r.fetchRC != -21 || r.body != nil || r.fetchErr == nil || !strings.Contains(r.fetchErr.Error(), c.want) {
			t.Errorf("fetch %s (%d bytes): %+v, want TM_EIO and %q", c.domain, c.size, r, c.want)
		}
	}
	// Store and lookup panic: nothing stored, not found, recorded.
	r = stsProbe(o, "panic.example", 65536, 1024)
	if _, ok := db["panic.example"]; ok || r.lookupRC != -23 || r.lastErr == nil ||
		!strings.Contains(r.lastErr.Error(), "STSLookup panicked: lookup") {
		t.Errorf("store/lookup panic: %+v", r)
	}
	// An entry longer than the buffer: not found; one that fits exactly: found.
	if r = stsProbe(o, "example.org", 65536, len(want)); r.lookupRC != -23 {
		t.Errorf("lookup into %d bytes: %+v", len(want), r)
	}
	if r = stsProbe(o, "example.org", 65536, len(want)+1); r.lookupRC != 0 || r.entry != want {
		t.Errorf("lookup into %d bytes: %+v", len(want)+1, r)
	}
	// Without callbacks the trampolines fail safely.
	if r = stsProbe(ContextOptions{}, "example.org", 65536, 1024); r.fetchRC != -21 || r.lookupRC != -23 {
		t.Errorf("no callbacks: %+v", r)
	}
}

func stsLine(domain, id, mode string, maxAge int, mx string, expires int64) string {
	now := time.Now().Unix()
	return fmt.Sprintf("policy %s %s %d %d %d %s %d %s", domain, id, now, expires, now, mode, maxAge, mx)
}

// 2100-01-01: an entry that never expires during a test.
const farFuture = 4102444800

func stsEntries(text string) []string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

func TestSTSCache(t *testing.T) {
	ctx, err := NewContext(ContextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	dir := t.TempDir()
	if list, err := ctx.STSCacheList(); err != nil || len(stsEntries(list)) != 0 {
		t.Fatalf("empty cache: %q %v", list, err)
	}
	good := stsLine("example.org", "20261201", "enforce", 86400, "mx1.example.org,*.mx.example.org", farFuture)
	other := stsLine("testing.example", "abc123", "testing", 604800, "mx.testing.example", farFuture)
	path := filepath.Join(dir, "sts-cache")
	writeFile(t, path, []byte("# a comment\n\n"+good+"\n"+other+"\n"))
	if err = ctx.STSCacheLoad(path); err != nil {
		t.Fatal(err)
	}
	list, err := ctx.STSCacheList()
	got := stsEntries(list)
	if err != nil || len(got) != 2 || !strings.Contains(list, good+"\n") || !strings.Contains(list, other+"\n") {
		t.Fatalf("loaded: %q %v", list, err)
	}
	saved := filepath.Join(dir, "saved")
	if err = ctx.STSCacheSave(saved); err != nil {
		t.Fatal(err)
	}
	o2, _ := NewContext(ContextOptions{})
	defer o2.Close()
	if err = o2.STSCacheLoad(saved); err != nil {
		t.Fatal(err)
	}
	if l2, _ := o2.STSCacheList(); !reflect.DeepEqual(stsEntries(l2), got) {
		t.Fatalf("reloaded %q != %q", l2, list)
	}
	// Expired entries are dropped on load.
	writeFile(t, path, []byte(stsLine("old.example", "1", "enforce", 86400, "mx.old.example", time.Now().Unix()-10)+"\n"))
	if err = o2.STSCacheLoad(path); err != nil {
		t.Fatal(err)
	}
	if l2, _ := o2.STSCacheList(); strings.Contains(l2, "old.example") {
		t.Fatalf("an expired entry was loaded: %q", l2)
	}
	// A malformed line: ErrSyntax with the line, and nothing loaded.
	for _, bad := range []string{
		"policy example.net",
		strings.Replace(good, " enforce ", " strict ", 1),
		strings.Replace(good, "20261201", "id-with-dash", 1),
		strings.Replace(good, "*.mx.example.org", "*.*.example.org", 1),
		"sts " + strings.TrimPrefix(good, "policy "),
	} {
		fresh, _ := NewContext(ContextOptions{})
		writeFile(t, path, []byte("# cache\n"+good+"\n"+bad+"\n"))
		err = fresh.STSCacheLoad(path)
		var te *Error
		if !errors.Is(err, ErrSyntax) || !errors.As(err, &te) || te.Line != 3 || !strings.Contains(err.Error(), ":3:") {
			t.Errorf("%q: %v", bad, err)
		}
		if l, _ := fresh.STSCacheList(); len(stsEntries(l)) != 0 {
			t.Errorf("%q: a bad file must load nothing, got %q", bad, l)
		}
		fresh.Close()
	}
	if err = ctx.STSCacheLoad(filepath.Join(dir, "missing")); !errors.Is(err, ErrIO) {
		t.Fatalf("missing file: %v", err)
	}
	if err = ctx.STSCacheSave(filepath.Join(dir, "no", "such", "dir")); !errors.Is(err, ErrIO) {
		t.Fatalf("save into a missing directory: %v", err)
	}
	closed, _ := NewContext(ContextOptions{})
	closed.Close()
	if _, err = closed.STSCacheList(); !errors.Is(err, ErrState) {
		t.Fatalf("closed context: %v", err)
	}
}

func TestDNSSECOptions(t *testing.T) {
	cases := []struct {
		o           ContextOptions
		resolver    string
		null        bool
		trust, dane int
	}{
		{ContextOptions{}, "", true, 0, 0},
		{ContextOptions{DNSSECResolver: "127.0.0.1:5353"}, "127.0.0.1:5353", false, 0, 0},
		{ContextOptions{DNSSECTrustResolver: true}, "", true, 1, 0},
		{ContextOptions{DANE: Off}, "", true, 0, -1},
		{ContextOptions{DANE: On}, "", true, 0, 1},
	}
	for _, c := range cases {
		r, null, trust, dane, err := dnssecRoundTrip(c.o)
		if err != nil || r != c.resolver || null != c.null || trust != c.trust || dane != c.dane {
			t.Errorf("%+v: got %q null=%v trust=%d dane=%d err=%v", c.o, r, null, trust, dane, err)
		}
	}
	if _, _, _, _, err := dnssecRoundTrip(ContextOptions{DNSSECResolver: "127.0.0.1\x00"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("NUL in DNSSECResolver: %v", err)
	}
	for _, o := range []ContextOptions{
		{DNSSECResolver: "127.0.0.1:5353"},
		{DNSSECResolver: "127.0.0.1"},
		{DNSSECResolver: "127.0.0.1:5353", DANE: Off},
		{DNSSECTrustResolver: true, DNSServer: "127.0.0.1:5353"},
		{DNSSECTrustResolver: true},
		{DANE: On},
		{DANE: Off},
	} {
		ctx, err := NewContext(o)
		if err != nil {
			t.Errorf("NewContext(%+v): %v", o, err)
			continue
		}
		ctx.Close()
	}
	// Checked by tm_context_new like DNSServer ("IP" or "IP:PORT").
	for _, bad := range []string{"not-an-ip", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:"} {
		ctx, err := NewContext(ContextOptions{DNSSECResolver: bad})
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("DNSSECResolver %q: %v, want ErrInvalid", bad, err)
		}
		if err == nil {
			ctx.Close()
		}
	}
}

func TestFloorDANE(t *testing.T) {
	if FloorDANE != 3 || FloorDANE.String() != "dane" {
		t.Fatalf("FloorDANE = %d %q", FloorDANE, FloorDANE.String())
	}
	ctx, err := NewContext(ContextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	if err = ctx.SetRecipientFloor("Dane.Example.", FloorDANE); err != nil {
		t.Fatal(err)
	}
	if f, err := ctx.RecipientFloor("dane.example"); err != nil || f != FloorDANE {
		t.Fatalf("floor %v %v", f, err)
	}
	if list, _ := ctx.Settings(); !strings.Contains(list, "recipient dane.example floor=dane") {
		t.Fatalf("list %q", list)
	}
	path := filepath.Join(t.TempDir(), "settings")
	os.WriteFile(path, []byte("recipient other.example floor=dane\n"), 0o644)
	if err = ctx.LoadSettings(path, false); err != nil {
		t.Fatal(err)
	}
	if f, _ := ctx.RecipientFloor("other.example"); f != FloorDANE {
		t.Fatalf("loaded floor %v", f)
	}
	if err = ctx.SetRecipientFloor("dane.example", FloorNone); err != nil {
		t.Fatal(err)
	}
	if f, _ := ctx.RecipientFloor("dane.example"); f != FloorNone {
		t.Fatalf("removed floor %v", f)
	}
	if err = ctx.SetRecipientFloor("dane.example", Floor(4)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("floor 4: %v", err)
	}
}

func TestSettings(t *testing.T) {
	ctx, err := NewContext(ContextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	if _, err = ctx.DomainPolicy("example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get unset: %v", err)
	}
	if err = ctx.SetDomainPolicy("Example.COM", Policy{RequireTLS: On, SkipVerify: Off}); err != nil {
		t.Fatal(err)
	}
	p, err := ctx.DomainPolicy("example.com.")
	if err != nil || p != (Policy{On, Off, Unset}) {
		t.Fatalf("get: %v %v", p, err)
	}
	if err = ctx.SetRecipientFloor("bank.example", FloorVerified); err != nil {
		t.Fatal(err)
	}
	if f, err := ctx.RecipientFloor("bank.example"); err != nil || f != FloorVerified {
		t.Fatalf("floor %v %v", f, err)
	}
	list, err := ctx.Settings()
	if err != nil || !strings.Contains(list, "sending example.com require_tls=yes skip_verify=no") ||
		!strings.Contains(list, "recipient bank.example floor=verified") {
		t.Fatalf("list %q %v", list, err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "settings")
	if err = ctx.SaveSettings(path); err != nil {
		t.Fatal(err)
	}
	other, _ := NewContext(ContextOptions{})
	defer other.Close()
	if err = other.LoadSettings(path, true); err != nil {
		t.Fatal(err)
	}
	if l2, _ := other.Settings(); l2 != list {
		t.Fatalf("reloaded %q != %q", l2, list)
	}
	if err = ctx.DeleteDomainPolicy("example.com"); err != nil {
		t.Fatal(err)
	}
	if err = ctx.DeleteDomainPolicy("example.com"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("sending a.example require_tls=yes\n\nrecipient b.example floor=strong\n"), 0o644)
	err = ctx.LoadSettings(bad, false)
	var te *Error
	if !errors.Is(err, ErrSyntax) || !errors.As(err, &te) || te.Line != 3 {
		t.Fatalf("syntax: %v", err)
	}
	if _, err = ctx.DomainPolicy("a.example"); !errors.Is(err, ErrNotFound) {
		t.Fatal("a bad file must change nothing")
	}
}

// ---------------------------------------------------------------------------
// Against the real peers

func needPeers(t *testing.T) {
	t.Helper()
	if os.Getenv("TM_TEST_PORT") != "" {
		return
	}
	msg := "TM_TEST_PORT is not set: run through tests/peers/peers.py run --dir DIR -- go test"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true: failing instead of skipping)")
	}
	t.Skip(msg)
}

func peersContext(t *testing.T, o ContextOptions) *Context {
	t.Helper()
	needPeers(t)
	port, _ := strconv.Atoi(os.Getenv("TM_TEST_PORT"))
	if o.CAFile == "" && o.CAPath == "" {
		o.CAFile = os.Getenv("TM_TEST_CA")
	}
	o.DNSServer = os.Getenv("TM_TEST_DNS")
	o.Port = port
	o.HeloName = "client.tm.test"
	o.CommandTimeout = 10 * time.Second
	ctx, err := NewContext(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ctx.Close(); err != nil {
			t.Error(err)
		}
	})
	return ctx
}

var localSeq struct {
	sync.Mutex
	n int
}

func local(tag string) string {
	localSeq.Lock()
	defer localSeq.Unlock()
	localSeq.n++
	return fmt.Sprintf("go-%s-%d-%d-%d", tag, os.Getpid(), time.Now().UnixNano()%1000000, localSeq.n)
}

func waitMail(t *testing.T, domain, local string) []byte {
	t.Helper()
	dir := filepath.Join(os.Getenv("TM_TEST_MAILDIR"), domain, local, "new")
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		files, _ := os.ReadDir(dir)
		if len(files) > 0 {
			b, err := os.ReadFile(filepath.Join(dir, files[0].Name()))
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatalf("no mail arrived in %s", dir)
	return nil
}

func mailCount(domain, local string) int {
	files, _ := os.ReadDir(filepath.Join(os.Getenv("TM_TEST_MAILDIR"), domain, local, "new"))
	return len(files)
}

func TestDeliverVerified(t *testing.T) {
	ctx := peersContext(t, ContextOptions{})
	l := local("valid")
	st, err := Deliver(ctx, Message{From: "sender@tm.test", To: []string{l + "@valid.tm.test"}, Data: body}, nil, nil)
	if err != nil || !st.Delivered() {
		t.Fatalf("%v %+v", err, st)
	}
	if !st.TLS || !st.CertVerified || st.MXHost != "mx-valid.tm.test" || st.Code/100 != 2 || st.TLSVersion == "" {
		t.Fatalf("%+v", st)
	}
	if len(st.Recipients) != 1 || st.Recipients[0].Result != Delivered || st.RcptCount != 1 ||
		st.RcptDelivered != 1 || st.Transactions != 1 {
		t.Fatalf("recipients %+v", st)
	}
	var m map[string]interface{}
	b, _ := json.Marshal(st)
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["result"] != "delivered" || m["certificate-verified"] != true || m["mx-host"] != "mx-valid.tm.test" {
		t.Fatalf("json %s", b)
	}
	if r, ok := m["recipients"].([]interface{}); !ok || len(r) != 1 {
		t.Fatalf("json recipients %s", b)
	}
	if !bytes.Contains(waitMail(t, "valid.tm.test", l), []byte("Hello from Go.")) {
		t.Fatal("content")
	}
}

// Against dnsmasq (no DNSSEC): DANE off by default; with the resolver
// trusted, every answer is insecure and the normal policy applies; floor
// dane with DANE off delivers nothing.
func TestDANEWithoutDNSSEC(t *testing.T) {
	ctx := peersContext(t, ContextOptions{})
	l, st, err := deliverValid(ctx, "daneoff", nil)
	if err != nil || st.DANE != "off" || st.MXDNSSEC || st.CertVerifiedBy != "pkix" || st.DANETLSA != "" {
		t.Fatalf("DANE off: %v %+v", err, st)
	}
	var m map[string]interface{}
	if err := json.Unmarshal([]byte(st.JSON()), &m); err != nil {
		t.Fatal(err)
	}
	if m["dane"] != "off" || m["certificate-verified-by"] != "pkix" || m["mx-dnssec"] != false {
		t.Fatalf("json %v", m)
	}
	waitMail(t, "valid.tm.test", l)

	trusting := peersContext(t, ContextOptions{DNSSECTrustResolver: true})
	l, st, err = deliverValid(trusting, "daneinsecure", nil)
	if err != nil || st.DANE != "insecure" || st.MXDNSSEC || st.CertVerifiedBy != "pkix" {
		t.Fatalf("unsigned zone: %v %+v", err, st)
	}
	waitMail(t, "valid.tm.test", l)

	if err := ctx.SetRecipientFloor("valid.tm.test", FloorDANE); err != nil {
		t.Fatal(err)
	}
	l, st, err = deliverValid(ctx, "danefloor", nil)
	if err == nil || st.Result != Deferred || st.Floor != FloorDANE {
		t.Fatalf("floor dane without DANE: %v %+v", err, st)
	}
	time.Sleep(200 * time.Millisecond)
	if mailCount("valid.tm.test", l) != 0 {
		t.Fatal("floor dane without DANE delivered")
	}
}

// dnsmasq serves no _mta-sts TXT records: no policy, delivered as before;
// an explicit host and a context with MTA-STS off report "off".
func TestMTASTSWithoutPolicy(t *testing.T) {
	ctx := peersContext(t, ContextOptions{})
	l, st, err := deliverValid(ctx, "stsnone", nil)
	if err != nil || st.MTASTS != "no-policy" || st.MTASTSID != "" || st.MTASTSCached || st.MTASTSWouldRefuse {
		t.Fatalf("no policy: %v %+v", err, st)
	}
	var m map[string]interface{}
	json.Unmarshal([]byte(st.JSON()), &m)
	if m["mta-sts"] != "no-policy" {
		t.Fatalf("JSON: %v", m)
	}
	waitMail(t, "valid.tm.test", l)
	l = local("stshost")
	st, err = Deliver(ctx, Message{From: "sender@tm.test", To: []string{l + "@valid.tm.test"}, Data: body}, nil,
		&SessionOptions{Host: os.Getenv("TM_TEST_MX_VALID")})
	if err != nil || st.MTASTS != "off" {
		t.Fatalf("explicit host: %v %+v", err, st)
	}
	waitMail(t, "valid.tm.test", l)
	fetched := 0
	off := peersContext(t, ContextOptions{MTASTS: Off, STSFetch: func(string, string) ([]byte, error) {
		fetched++
		return nil, errors.New("not expected")
	}})
	l, st, err = deliverValid(off, "stsoff", nil)
	if err != nil || st.MTASTS != "off" || st.MTASTSError != "" || fetched != 0 {
		t.Fatalf("MTA-STS off: %v %+v (fetched %d)", err, st, fetched)
	}
	waitMail(t, "valid.tm.test", l)
}

// stsPolicy is an MTA-STS policy text (RFC 8461 3.2).
func stsPolicy(mode string, mx ...string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "version: STSv1\r\nmode: %s\r\n", mode)
	for _, m := range mx {
		fmt.Fprintf(&b, "mx: %s\r\n", m)
	}
	b.WriteString("max_age: 86400\r\n")
	return []byte(b.String())
}

// MTA-STS through STSFetch against Postfix: the peers' sts.test domains
// publish _mta-sts TXT records (callback: id cb1, MX mx-valid; plain: id
// p1, MX mx-plain without STARTTLS); the policies come from the callback.
func TestMTASTSEnforce(t *testing.T) {
	const dom = "callback.sts.test"
	var mu sync.Mutex
	fetches := 0
	stored := map[string]string{}
	ctx := peersContext(t, ContextOptions{
		STSFetch: func(domain, url string) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			fetches++
			if domain != dom || url != "https://mta-sts."+dom+"/.well-known/mta-sts.txt" {
				return nil, fmt.Errorf("unexpected fetch %s %s", domain, url)
			}
			return stsPolicy("enforce", "mx-valid.tm.test"), nil
		},
		STSStore: func(domain, entry string) {
			mu.Lock()
			defer mu.Unlock()
			stored[domain] = entry
		},
	})
	send := func(c *Context, tag, domain string, p *Policy) (string, DeliveryStatus, error) {
		l := local(tag)
		st, err := Deliver(c, Message{From: "sender@tm.test", To: []string{l + "@" + domain}, Data: body}, p, nil)
		return l, st, err
	}
	l, st, err := send(ctx, "stsenforce", dom, nil)
	if err != nil || st.MTASTS != "enforce" || st.MTASTSID != "cb1" || st.MTASTSCached || st.MTASTSError != "" ||
		!st.TLS || !st.CertVerified || fetches != 1 {
		t.Fatalf("enforce: %v %+v (fetches %d, callback error %v)", err, st, fetches, ctx.STSCallbackError())
	}
	waitMail(t, dom, l)
	entry := stored[dom]
	if !strings.HasPrefix(entry, "policy "+dom+" cb1 ") || !strings.HasSuffix(entry, " enforce 86400 mx-valid.tm.test") {
		t.Fatalf("stored %q", stored)
	}
	if list, _ := ctx.STSCacheList(); !strings.Contains(list, entry+"\n") {
		t.Fatalf("cache %q lacks %q", list, entry)
	}
	l, st, err = send(ctx, "stscached", dom, nil)
	if err != nil || st.MTASTS != "enforce" || !st.MTASTSCached || fetches != 1 {
		t.Fatalf("cached: %v %+v (fetches %d)", err, st, fetches)
	}
	waitMail(t, dom, l)
	path := filepath.Join(t.TempDir(), "sts-cache")
	if err = ctx.STSCacheSave(path); err != nil {
		t.Fatal(err)
	}
	// After a "restart": the file, or the host's store, and no fetch.
	none := func(string, string) ([]byte, error) { return nil, errors.New("offline") }
	fromFile := peersContext(t, ContextOptions{STSFetch: none})
	if err = fromFile.STSCacheLoad(path); err != nil {
		t.Fatal(err)
	}
	fromStore := peersContext(t, ContextOptions{STSFetch: none, STSLookup: func(d string) (string, bool) {
		mu.Lock()
		defer mu.Unlock()
		e, ok := stored[d]
		return e, ok
	}})
	for _, c := range []*Context{fromFile, fromStore} {
		l, st, err = send(c, "stsreload", dom, nil)
		if err != nil || st.MTASTS != "enforce" || st.MTASTSID != "cb1" || !st.MTASTSCached || c.STSCallbackError() != nil {
			t.Fatalf("reloaded: %v %+v %v", err, st, c.STSCallbackError())
		}
		waitMail(t, dom, l)
	}
	// No MX host matches: deferred, whatever the message's policy says.
	nomatch := peersContext(t, ContextOptions{STSFetch: func(string, string) ([]byte, error) {
		return stsPolicy("enforce", "*.elsewhere.example"), nil
	}})
	l, st, err = send(nomatch, "stsnomatch", dom, &Policy{RequireTLS: Off, SkipVerify: On})
	if !errors.Is(err, ErrTLSRequired) || st.Result != Deferred || st.MTASTS != "enforce" ||
		!strings.Contains(st.MTASTSError, "matches no mx pattern") {
		t.Fatalf("no matching MX: %v %+v", err, st)
	}
	// A matching host without STARTTLS: deferred, never plaintext.
	plain := peersContext(t, ContextOptions{STSFetch: func(string, string) ([]byte, error) {
		return stsPolicy("enforce", "mx-plain.tm.test"), nil
	}})
	l2, st, err := send(plain, "stsplain", "plain.sts.test", nil)
	if !errors.Is(err, ErrTLSRequired) || st.Result != Deferred || st.MTASTS != "enforce" || st.MTASTSID != "p1" || st.TLS {
		t.Fatalf("enforce without STARTTLS: %v %+v", err, st)
	}
	time.Sleep(200 * time.Millisecond)
	if mailCount(dom, l) != 0 || mailCount("plain.sts.test", l2) != 0 {
		t.Fatal("a refused message arrived")
	}
}

// Testing mode: delivered under the normal policy, and the status says
// what enforce would have refused; a failing fetcher: fetch-failed.
func TestMTASTSTestingAndFetchFailed(t *testing.T) {
	tctx := peersContext(t, ContextOptions{STSFetch: func(string, string) ([]byte, error) {
		return stsPolicy("testing", "mx-plain.tm.test"), nil
	}})
	l := local("ststesting")
	st, err := Deliver(tctx, Message{From: "sender@tm.test", To: []string{l + "@plain.sts.test"}, Data: body}, nil, nil)
	if err != nil || st.TLS || st.MTASTS != "testing" || !st.MTASTSWouldRefuse || !strings.Contains(st.MTASTSError, "no TLS") {
		t.Fatalf("testing: %v %+v", err, st)
	}
	waitMail(t, "plain.sts.test", l)
	failing := peersContext(t, ContextOptions{STSFetch: func(string, string) ([]byte, error) {
		panic("proxy down")
	}})
	l = local("stsfailed")
	st, err = Deliver(failing, Message{From: "sender@tm.test", To: []string{l + "@callback.sts.test"}, Data: body}, nil, nil)
	if err != nil || st.MTASTS != "fetch-failed" || st.MTASTSError == "" || failing.STSCallbackError() == nil ||
		!strings.Contains(failing.STSCallbackError().Error(), "proxy down") {
		t.Fatalf("fetch failed: %v %+v %v", err, st, failing.STSCallbackError())
	}
	waitMail(t, "callback.sts.test", l)
}

func TestRequireTLS(t *testing.T) {
	ctx := peersContext(t, ContextOptions{})
	l := local("plain")
	st, err := Deliver(ctx, Message{From: "sender@tm.test", To: []string{l + "@plain.tm.test"}, Data: body},
		&Policy{RequireTLS: On}, nil)
	if !errors.Is(err, ErrTLSRequired) || st.Result != Deferred || st.RequireTLSSource != SourceMessage {
		t.Fatalf("%v %+v", err, st)
	}
	time.Sleep(200 * time.Millisecond)
	if mailCount("plain.tm.test", l) != 0 {
		t.Fatal("delivered without TLS")
	}
	// Opportunistic: plaintext, and the status says why.
	st, err = Deliver(ctx, Message{From: "sender@tm.test", To: []string{l + "@plain.tm.test"}, Data: body}, nil, nil)
	if err != nil || st.TLS || st.TLSFailure != TLSFailureNotOffered {
		t.Fatalf("%v %+v", err, st)
	}
	// Fail-over to the MX with TLS.
	st, err = Deliver(ctx, Message{From: "sender@tm.test", To: []string{local("pf") + "@plainfirst.tm.test"}, Data: body},
		&Policy{RequireTLS: On}, nil)
	if err != nil || st.MXHost != "mx-valid.tm.test" || !st.CertVerified {
		t.Fatalf("%v %+v", err, st)
	}
}

func TestSkipVerifyHost(t *testing.T) {
	ctx := peersContext(t, ContextOptions{})
	host := os.Getenv("TM_TEST_MX_SELFSIGNED")
	st, err := Deliver(ctx, Message{From: "sender@tm.test", To: []string{local("ss") + "@valid.tm.test"}, Data: body},
		&Policy{RequireTLS: On, SkipVerify: On}, &SessionOptions{Host: host})
	if err != nil || !st.TLS || st.CertVerified || st.MXHost != host {
		t.Fatalf("%v %+v", err, st)
	}
	_, err = Deliver(ctx, Message{From: "sender@tm.test", To: []string{local("ss") + "@valid.tm.test"}, Data: body},
		&Policy{RequireTLS: On}, &SessionOptions{Host: host})
	if !errors.Is(err, ErrTLSRequired) {
		t.Fatalf("unverified under require_tls: %v", err)
	}
}

func TestOutcomes(t *testing.T) {
	ctx := peersContext(t, ContextOptions{})
	send := func(to ...string) (DeliveryStatus, error) {
		return Deliver(ctx, Message{From: "sender@tm.test", To: to, Data: body}, nil, nil)
	}
	if st, err := send("reject-go@valid.tm.test"); !errors.Is(err, ErrRejected) || st.Result != Bounced {
		t.Fatalf("reject: %v %v", err, st.Result)
	}
	if st, _ := send("defer-go@valid.tm.test"); st.Result != Deferred {
		t.Fatalf("defer: %v", st.Result)
	}
	ok := local("partial")
	st, err := send(ok+"@valid.tm.test", "reject-x@valid.tm.test")
	if !errors.Is(err, ErrPartial) || st.Delivered() || len(st.Recipients) != 2 ||
		st.Recipients[0].Result != Delivered || st.Recipients[1].Result != Bounced || st.Recipients[1].Code != 550 {
		t.Fatalf("partial: %v %+v", err, st.Recipients)
	}
	if st.RcptCount != 2 || st.RcptDelivered != 1 || st.RcptBounced != 1 {
		t.Fatalf("partial counts: %+v", st)
	}
	waitMail(t, "valid.tm.test", ok)
	if st, err := send("x@nullmx.tm.test"); !errors.Is(err, ErrNullMX) || st.Result != Bounced {
		t.Fatalf("null MX: %v %v", err, st.Result)
	}
	if st, err := send("x@nosuch.tm.test"); !errors.Is(err, ErrNoDomain) || st.Result != Bounced {
		t.Fatalf("nosuch: %v %v", err, st.Result)
	}
}

func TestMoreRecipientsThanOneTransaction(t *testing.T) {
	ctx := peersContext(t, ContextOptions{})
	to := make([]string, 105)
	for i := range to {
		to[i] = local(fmt.Sprintf("many%03d", i)) + "@valid.tm.test"
	}
	st, err := Deliver(ctx, Message{From: "sender@tm.test", To: to, Data: body}, nil, nil)
	if err != nil || !st.Delivered() || len(st.Recipients) != len(to) || st.RcptDelivered != len(to) ||
		st.Transactions < 2 {
		t.Fatalf("%v result=%v recipients=%d delivered=%d transactions=%d", err, st.Result,
			len(st.Recipients), st.RcptDelivered, st.Transactions)
	}
	for i, r := range st.Recipients {
		if r.Address != to[i] || r.Result != Delivered {
			t.Fatalf("recipient %d: %+v", i, r)
		}
	}
	var m map[string]interface{}
	if err := json.Unmarshal([]byte(st.JSON()), &m); err != nil {
		t.Fatal(err)
	}
	if r, _ := m["recipients"].([]interface{}); len(r) != len(to) {
		t.Fatalf("json lists %d recipients", len(r))
	}
	waitMail(t, "valid.tm.test", strings.TrimSuffix(to[len(to)-1], "@valid.tm.test"))
}

type slowReader struct {
	r io.Reader
}

func (s *slowReader) Read(p []byte) (int, error) {
	if len(p) > 5 {
		p = p[:5]
	}
	return s.r.Read(p)
}

type failingReader struct{ n int }

var errDisk = errors.New("disk on fire")

func (f *failingReader) Read(p []byte) (int, error) {
	f.n++
	if f.n > 2 {
		return 0, errDisk
	}
	return copy(p, "X-A: b\r\n"), nil
}

func TestStreaming(t *testing.T) {
	ctx := peersContext(t, ContextOptions{})
	var big bytes.Buffer
	big.WriteString("Subject: streamed\r\n\r\n")
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(&big, "line %06d\n", i)
	}
	big.WriteString(".leading dot\n")
	l := local("stream")
	st, err := Deliver(ctx, Message{From: "sender@tm.test", To: []string{l + "@valid.tm.test"}, Reader: &big}, nil, nil)
	if err != nil || !st.Delivered() {
		t.Fatalf("%v %+v", err, st)
	}
	got := waitMail(t, "valid.tm.test", l)
	if !bytes.Contains(got, []byte("line 019999")) || !bytes.Contains(got, []byte("\n.leading dot")) {
		t.Fatal("streamed content")
	}
	l = local("slow")
	if _, err = Deliver(ctx, Message{From: "sender@tm.test", To: []string{l + "@valid.tm.test"},
		Reader: &slowReader{bytes.NewReader(body)}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	waitMail(t, "valid.tm.test", l)

	l = local("fail")
	st, err = Deliver(ctx, Message{From: "sender@tm.test", To: []string{l + "@valid.tm.test"}, Reader: &failingReader{}}, nil, nil)
	if !errors.Is(err, ErrRead) || !errors.Is(err, errDisk) || st.Delivered() {
		t.Fatalf("failing reader: %v %+v", err, st)
	}
	time.Sleep(300 * time.Millisecond)
	if mailCount("valid.tm.test", l) != 0 {
		t.Fatal("a failed read must deliver nothing")
	}
}

func TestSession(t *testing.T) {
	ctx := peersContext(t, ContextOptions{})
	s, st, err := OpenSession(ctx, "valid.tm.test", nil)
	if err != nil || st.MXHost != "mx-valid.tm.test" {
		t.Fatalf("open: %v %+v", err, st)
	}
	if err := ctx.Close(); !errors.Is(err, ErrState) {
		t.Fatalf("Close with an open session: %v", err)
	}
	st, err = s.StartTLS(&Policy{RequireTLS: On})
	if err != nil || !st.TLS || !st.CertVerified {
		t.Fatalf("starttls: %v %+v", err, st)
	}
	var locals []string
	for i := 0; i < 5; i++ {
		l := local(fmt.Sprintf("sess%d", i))
		locals = append(locals, l)
		st, err = s.Send(Message{From: "sender@tm.test", To: []string{l + "@valid.tm.test"},
			Data: []byte(fmt.Sprintf("Subject: session %d\r\n\r\nmessage %d\r\n", i, i))})
		if err != nil || !st.Delivered() || !st.TLS {
			t.Fatalf("send %d: %v %+v", i, err, st)
		}
	}
	if st, err = s.Send(Message{From: "sender@tm.test", To: []string{"reject-s@valid.tm.test"}, Data: body}); !errors.Is(err, ErrRejected) {
		t.Fatalf("reject in session: %v", err)
	}
	if _, err = s.Send(Message{From: "sender@tm.test", To: []string{local("after") + "@valid.tm.test"}, Data: body}); err != nil {
		t.Fatalf("session unusable after a refusal: %v", err)
	}
	s.Close()
	s.Close()
	if _, err = s.Send(Message{From: "sender@tm.test", To: []string{"x@valid.tm.test"}, Data: body}); !errors.Is(err, ErrState) {
		t.Fatalf("send after close: %v", err)
	}
	for i, l := range locals {
		if !bytes.Contains(waitMail(t, "valid.tm.test", l), []byte(fmt.Sprintf("message %d", i))) {
			t.Fatal("session content")
		}
	}

	s, _, err = OpenSession(ctx, "plain.tm.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st, err = s.StartTLS(&Policy{RequireTLS: On}); !errors.Is(err, ErrTLSRequired) || st.Result != Deferred {
		t.Fatalf("starttls on plain: %v %+v", err, st)
	}
	if _, _, err = OpenSession(ctx, "nullmx.tm.test", nil); !errors.Is(err, ErrNullMX) {
		t.Fatalf("open null MX: %v", err)
	}
}

func TestSendingDomainAndLog(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	ctx := peersContext(t, ContextOptions{LogLevel: LogDebug, Log: func(l LogLevel, s string) {
		mu.Lock()
		lines = append(lines, s)
		mu.Unlock()
	}})
	if err := ctx.SetDomainPolicy("strict.example", Policy{RequireTLS: On}); err != nil {
		t.Fatal(err)
	}
	st, err := Deliver(ctx, Message{From: "news@strict.example", To: []string{local("sd") + "@plain.tm.test"}, Data: body}, nil, nil)
	if !errors.Is(err, ErrTLSRequired) || st.RequireTLSSource != SourceSendingDomain {
		t.Fatalf("%v %+v", err, st)
	}
	st, err = Deliver(ctx, Message{From: "news@strict.example", To: []string{local("sd") + "@plain.tm.test"}, Data: body},
		&Policy{RequireTLS: Off}, nil)
	if err != nil || st.RequireTLSSource != SourceMessage {
		t.Fatalf("%v %+v", err, st)
	}
	mu.Lock()
	defer mu.Unlock()
	found := false
	for _, l := range lines {
		if strings.Contains(strings.ToUpper(l), "EHLO") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no EHLO in the debug log (%d lines)", len(lines))
	}
}

// copyFile writes src's content to dst through a rename, as a certificate
// rotation would.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dst, b)
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

// deliverValid delivers one fresh message to valid.tm.test.
func deliverValid(ctx *Context, tag string, p *Policy) (string, DeliveryStatus, error) {
	l := local(tag)
	st, err := Deliver(ctx, Message{From: "sender@tm.test", To: []string{l + "@valid.tm.test"}, Data: body}, p, nil)
	return l, st, err
}

func TestCAPath(t *testing.T) {
	needPeers(t)
	dir := t.TempDir()
	copyFile(t, os.Getenv("TM_TEST_CA"), filepath.Join(dir, "tlsmail-test-ca.pem"))
	os.WriteFile(filepath.Join(dir, "README"), []byte("not a certificate: skipped\n"), 0o644)
	ctx := peersContext(t, ContextOptions{CAPath: dir})
	l, st, err := deliverValid(ctx, "capath", &Policy{RequireTLS: On})
	if err != nil || !st.Delivered() || !st.TLS || !st.CertVerified || st.TLSFailure != TLSFailureNone ||
		st.MXHost != "mx-valid.tm.test" {
		t.Fatalf("%v %+v", err, st)
	}
	if !bytes.Contains(waitMail(t, "valid.tm.test", l), []byte("Hello from Go.")) {
		t.Fatal("content")
	}
}

func TestResumption(t *testing.T) {
	ctx := peersContext(t, ContextOptions{})
	var sts [2]DeliveryStatus
	var locals [2]string
	for i := range sts {
		var err error
		locals[i], sts[i], err = deliverValid(ctx, fmt.Sprintf("resume%d", i), nil)
		if err != nil || !sts[i].Delivered() || !sts[i].TLS || !sts[i].CertVerified || sts[i].MXHost != "mx-valid.tm.test" {
			t.Fatalf("delivery %d: %v %+v", i, err, sts[i])
		}
	}
	if sts[0].TLSResumed || !sts[1].TLSResumed || sts[1].TLSVersion != sts[0].TLSVersion {
		t.Fatalf("resumed: first %v (%s), second %v (%s)", sts[0].TLSResumed, sts[0].TLSVersion,
			sts[1].TLSResumed, sts[1].TLSVersion)
	}
	for i, want := range []bool{false, true} {
		var m map[string]interface{}
		if err := json.Unmarshal([]byte(sts[i].JSON()), &m); err != nil {
			t.Fatal(err)
		}
		if m["tls-resumed"] != want {
			t.Fatalf("delivery %d: json tls-resumed %v", i, m["tls-resumed"])
		}
	}
	for _, l := range locals {
		waitMail(t, "valid.tm.test", l)
	}
}

// ReloadCA: CAFile a copy of the test CA: verified; reloaded, verified again
// (and not resumed: the reload forgot the sessions the old store verified);
// replaced by a file with no certificate, or removed, ReloadCA fails with
// ErrCAFile and the test CA stays in use.
func TestReloadCA(t *testing.T) {
	needPeers(t)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	copyFile(t, os.Getenv("TM_TEST_CA"), ca)
	ctx := peersContext(t, ContextOptions{CAFile: ca})
	if _, st, err := deliverValid(ctx, "reload0", nil); err != nil || !st.TLS || !st.CertVerified {
		t.Fatalf("before: %v %+v", err, st)
	}
	if err := ctx.ReloadCA(); err != nil {
		t.Fatal(err)
	}
	if _, st, err := deliverValid(ctx, "reload1", nil); err != nil || !st.TLS || !st.CertVerified || st.TLSResumed {
		t.Fatalf("after a reload: %v %+v", err, st)
	}

	writeFile(t, ca, []byte("no certificate here\n"))
	err := ctx.ReloadCA()
	var te *Error
	if !errors.Is(err, ErrCAFile) || !errors.As(err, &te) || te.Code != -16 {
		t.Fatalf("reload from a file without a certificate: %v", err)
	}
	l, st, err := deliverValid(ctx, "reloadfail", &Policy{RequireTLS: On})
	if err != nil || !st.Delivered() || !st.TLS || !st.CertVerified {
		t.Fatalf("after a failed reload: %v %+v", err, st)
	}
	waitMail(t, "valid.tm.test", l)

	if err := os.Remove(ca); err != nil {
		t.Fatal(err)
	}
	if err := ctx.ReloadCA(); !errors.Is(err, ErrCAFile) {
		t.Fatalf("reload from no file: %v", err)
	}
	if _, st, err := deliverValid(ctx, "reloadgone", &Policy{RequireTLS: On}); err != nil || !st.TLS || !st.CertVerified {
		t.Fatalf("after a reload from no file: %v %+v", err, st)
	}
}

// ReloadCA on one goroutine while others deliver with the context: every
// delivery verified, and Close afterwards succeeds.
func TestReloadCADuringDeliveries(t *testing.T) {
	ctx := peersContext(t, ContextOptions{})
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 2; j++ {
				_, st, err := deliverValid(ctx, fmt.Sprintf("relconc%d-%d", i, j), &Policy{RequireTLS: On})
				if err == nil && (!st.TLS || !st.CertVerified) {
					err = fmt.Errorf("not verified: %+v", st)
				}
				if err != nil {
					errs[i] = err
					return
				}
			}
		}(i)
	}
	for i := 0; i < 5; i++ {
		if err := ctx.ReloadCA(); err != nil {
			t.Error(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("goroutine %d: %v", i, err)
		}
	}
}

func TestConcurrentDeliveries(t *testing.T) {
	ctx := peersContext(t, ContextOptions{})
	var wg sync.WaitGroup
	locals := make([]string, 8)
	errs := make([]error, 8)
	for i := range locals {
		locals[i] = local(fmt.Sprintf("conc%d", i))
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			st, err := Deliver(ctx, Message{From: "sender@tm.test", To: []string{locals[i] + "@valid.tm.test"}, Data: body}, nil, nil)
			if err == nil && !st.CertVerified {
				err = errors.New("not verified")
			}
			errs[i] = err
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("goroutine %d: %v", i, err)
		}
		waitMail(t, "valid.tm.test", locals[i])
	}
}
