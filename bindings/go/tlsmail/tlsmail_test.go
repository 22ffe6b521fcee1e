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

// The fields added last (tls_resumed and the DANE fields of the status,
// ca_path and the DNSSEC options of the context options) are where the
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
		{"tm_delivery_status", []string{"tls_resumed", "dane", "mx_dnssec", "cert_verified_by", "dane_tlsa"}},
		{"tm_context_options", []string{"ca_path", "dnssec_resolver", "dnssec_trust_resolver", "dane"}},
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
