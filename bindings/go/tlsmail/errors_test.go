package tlsmail

// Error classes: errors.Is against ErrResultDeferred, ErrResultUncertain
// and ErrResultBounced by the status's result, beside the code sentinels.

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

var classes = []struct {
	name   string
	target error
	result Result
}{
	{"ErrResultDeferred", ErrResultDeferred, Deferred},
	{"ErrResultUncertain", ErrResultUncertain, Uncertain},
	{"ErrResultBounced", ErrResultBounced, Bounced},
}

// classTarget is the ErrResult* value of r.
func classTarget(r Result) error {
	for _, c := range classes {
		if c.result == r {
			return c.target
		}
	}
	return nil
}

// checkClass fails unless err matches the class of want and no other, and
// is an *Error with code and a status of that result.
func checkClass(t *testing.T, what string, err error, code int, want Result) *Error {
	t.Helper()
	for _, c := range classes {
		if got := errors.Is(err, c.target); got != (c.result == want) {
			t.Errorf("%s: errors.Is(%v, %s) = %v, want class %v", what, err, c.name, got, want)
		}
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: errors.As(%#v, *Error) failed", what, err)
	}
	if e.Code != code || e.Result != want {
		t.Errorf("%s: Code %d Result %v, want %d %v", what, e.Code, e.Result, code, want)
	}
	if e.Status == nil {
		t.Fatalf("%s: no Status", what)
	}
	if e.Status.ErrorCode != code {
		t.Errorf("%s: Status.ErrorCode %d, want %d", what, e.Status.ErrorCode, code)
	}
	return e
}

func TestErrorClasses(t *testing.T) {
	tls := ErrTLSRequired.Code
	cases := []struct {
		result Result
		code   int
		class  Result // ResultNone: no class
		same   *Error // the code sentinel it matches
	}{
		{ResultNone, ErrInvalid.Code, ResultNone, ErrInvalid},
		{Deferred, ErrConnect.Code, Deferred, ErrConnect},
		{Deferred, ErrTimeout.Code, Deferred, ErrTimeout},
		{Uncertain, ErrUncertain.Code, Uncertain, ErrUncertain},
		{Bounced, ErrRejected.Code, Bounced, ErrRejected},
		{Bounced, ErrNullMX.Code, Bounced, ErrNullMX},
		{Deferred, tls, Deferred, ErrTLSRequired},
		{ResultNone, tls, Deferred, ErrTLSRequired}, // TLSRequired is a Deferred whatever the result
		{Bounced, tls, Deferred, ErrTLSRequired},
		// A partial delivery: the class of the failed recipients.
		{Uncertain, ErrPartial.Code, Uncertain, ErrPartial},
		{Deferred, ErrPartial.Code, Deferred, ErrPartial},
		{Bounced, ErrPartial.Code, Bounced, ErrPartial},
	}
	for _, c := range cases {
		what := fmt.Sprintf("result %v code %d", c.result, c.code)
		st := DeliveryStatus{Result: c.result, ErrorCode: c.code, MXHost: "mx.example.org",
			Recipients: []RecipientStatus{{Address: "a@example.org", Result: c.result}}}
		err := st.Err()
		if err == nil {
			t.Fatalf("%s: Err() is nil", what)
		}
		for _, cl := range classes {
			if got := errors.Is(err, cl.target); got != (cl.result == c.class) {
				t.Errorf("%s: errors.Is(err, %s) = %v", what, cl.name, got)
			}
		}
		if !errors.Is(err, c.same) {
			t.Errorf("%s: errors.Is(err, %v) is false", what, c.same)
		}
		for _, other := range []*Error{ErrInvalid, ErrConnect, ErrTLS, ErrRejected, ErrPartial, ErrUncertain} {
			if other.Code != c.code && errors.Is(err, other) {
				t.Errorf("%s: matches the code sentinel %v", what, other)
			}
		}
		var e *Error
		if !errors.As(fmt.Errorf("wrapped: %w", err), &e) {
			t.Fatalf("%s: errors.As through a wrapper failed", what)
		}
		if !errors.Is(fmt.Errorf("wrapped: %w", err), c.same) {
			t.Errorf("%s: code lost through a wrapper", what)
		}
		if c.class != ResultNone && !errors.Is(fmt.Errorf("wrapped: %w", err), classTarget(c.class)) {
			t.Errorf("%s: class lost through a wrapper", what)
		}
		if e.Code != c.code || e.Result != c.class || e.Error() != c.same.Error() {
			t.Errorf("%s: %#v", what, e)
		}
		if e.Status == nil || e.Status.MXHost != "mx.example.org" || e.Status.Result != c.result ||
			len(e.Status.Recipients) != 1 {
			t.Fatalf("%s: Status %+v", what, e.Status)
		}
		st.MXHost = "changed.example.org" // the error keeps a copy
		if e.Status.MXHost != "mx.example.org" {
			t.Errorf("%s: Status is not a copy", what)
		}
	}

	delivered := DeliveryStatus{Result: Delivered, RcptCount: 1, RcptDelivered: 1}
	if err := delivered.Err(); err != nil {
		t.Fatalf("delivered: %v", err)
	}
	// Nothing delivered is not success: the zero status (also that of a
	// successful OpenSession) gives an error of no class.
	var zero DeliveryStatus
	err := zero.Err()
	var e *Error
	if err == nil || !errors.As(err, &e) || e.Code != 0 || e.Result != ResultNone || e.Status == nil ||
		e.Error() != "tlsmail: not delivered (result none)" {
		t.Fatalf("zero status: %#v", err)
	}
	for _, cl := range classes {
		if errors.Is(err, cl.target) {
			t.Errorf("zero status matches %s", cl.name)
		}
	}

	// The class values: distinct, named after tm_result_name.
	for i, a := range classes {
		if a.target.Error() != "tlsmail: result "+a.result.String() ||
			!strings.HasSuffix(a.target.Error(), []string{"deferred", "uncertain", "bounced"}[i]) {
			t.Errorf("%s.Error() = %q", a.name, a.target.Error())
		}
		for j, b := range classes {
			if errors.Is(a.target, b.target) != (i == j) {
				t.Errorf("errors.Is(%s, %s) = %v", a.name, b.name, i != j)
			}
		}
	}
	// The sentinels: ErrTLSRequired is a Deferred, the others have no class.
	if !errors.Is(ErrTLSRequired, ErrResultDeferred) || errors.Is(ErrTLSRequired, ErrResultBounced) ||
		errors.Is(ErrTLSRequired, ErrResultUncertain) {
		t.Error("ErrTLSRequired must match ErrResultDeferred only")
	}
	for _, s := range []*Error{ErrTLS, ErrConnect, ErrRejected, ErrPartial, ErrInvalid} {
		for _, cl := range classes {
			if errors.Is(s, cl.target) {
				t.Errorf("errors.Is(%v, %s)", s, cl.name)
			}
		}
	}
}

// The code-based errors.Is of 0.2 is unchanged.
func TestErrorCodesUnchanged(t *testing.T) {
	old := &Error{Code: ErrTLSRequired.Code, Msg: "made by hand"} // no Result, no Status
	if !errors.Is(old, ErrTLSRequired) || errors.Is(old, ErrTLS) || !errors.Is(old, ErrResultDeferred) {
		t.Fatal("a hand-made TM_ETLSREQUIRED error")
	}
	rej := &Error{Code: ErrRejected.Code, Msg: "refused"}
	if !errors.Is(rej, ErrRejected) || errors.Is(rej, ErrResultBounced) {
		t.Fatal("an *Error without Result matches its code only")
	}
	if errors.Is(ErrTLS, ErrTLSRequired) || !errors.Is(ErrTLS, &Error{Code: ErrTLS.Code}) {
		t.Fatal("codes")
	}
	var nilErr *Error
	if errors.Is(ErrTLS, nilErr) {
		t.Fatal("a nil *Error target matched")
	}
	if ErrTLSRequired.Result != ResultNone || ErrTLSRequired.Status != nil {
		t.Fatalf("the sentinel changed: %#v", ErrTLSRequired)
	}
	// withStatus copies: the sentinel it is given stays as it was.
	err := withStatus(ErrRejected, DeliveryStatus{Result: Bounced, ErrorCode: ErrRejected.Code})
	if err == error(ErrRejected) || ErrRejected.Result != ResultNone || ErrRejected.Status != nil ||
		!errors.Is(err, ErrResultBounced) || !errors.Is(err, ErrRejected) {
		t.Fatalf("withStatus on a sentinel: %#v %#v", err, ErrRejected)
	}
	plain := errors.New("not ours")
	if withStatus(plain, DeliveryStatus{Result: Bounced}) != plain || withStatus(nil, DeliveryStatus{}) != nil {
		t.Fatal("withStatus on other errors")
	}
}

// fakeSMTP is an SMTP server on a loopback port, for the classes without
// the peers: 220, 250 to every command but RCPT TO:<defer...> (450) and
// RCPT TO:<reject...> (550), 354 to DATA; from the dropAt-th end of data
// on (0: never) it closes the connection without a reply.
func fakeSMTP(t *testing.T, dropAt int) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	var mu sync.Mutex
	ends := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r := bufio.NewReader(c)
				say := func(s string) bool { _, err := c.Write([]byte(s + "\r\n")); return err == nil }
				if !say("220 fake.tm.test ESMTP") {
					return
				}
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					cmd := strings.ToUpper(strings.TrimSpace(line))
					switch {
					case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
						say("250 fake.tm.test")
					case strings.HasPrefix(cmd, "RCPT TO:<DEFER"):
						say("450 4.2.0 try later")
					case strings.HasPrefix(cmd, "RCPT TO:<REJECT"):
						say("550 5.1.1 no such user")
					case cmd == "DATA":
						say("354 go ahead")
						for {
							l, err := r.ReadString('\n')
							if err != nil {
								return
							}
							if l == ".\r\n" {
								break
							}
						}
						mu.Lock()
						ends++
						drop := dropAt > 0 && ends >= dropAt
						mu.Unlock()
						if drop {
							return
						}
						say("250 2.0.0 queued")
					case cmd == "QUIT":
						say("221 bye")
						return
					default:
						say("250 ok")
					}
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// Real outcomes without the peers: a refused connection, a bad address,
// and a server that refuses recipients or drops the connection after the
// end of data.
func TestErrorClassesOffline(t *testing.T) {
	ctx, err := NewContext(ContextOptions{HeloName: "client.tm.test", CommandTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ctx.Close()
	deliver := func(port int, to ...string) (DeliveryStatus, error) {
		return Deliver(ctx, Message{From: "a@tm.test", To: to, Data: body}, nil,
			&SessionOptions{Host: "127.0.0.1", Port: port})
	}
	// The error the call returned and the status's Err agree.
	same := func(what string, st DeliveryStatus, err error) {
		t.Helper()
		var a, b *Error
		if !errors.As(err, &a) || !errors.As(st.Err(), &b) || a.Code != b.Code || a.Result != b.Result ||
			a.Result != classOf(st.ErrorCode, st.Result) || a.Status.MXPort != st.MXPort {
			t.Errorf("%s: the call's %#v and Err's %#v differ", what, err, st.Err())
		}
	}

	refused := refusingPort(t)
	st, err := deliver(refused, "b@tm.test")
	checkClass(t, "refused connection", err, ErrConnect.Code, Deferred)
	same("refused connection", st, err)

	st, err = deliver(refused, "bad\r\n@tm.test")
	e := checkClass(t, "bad address", err, ErrAddress.Code, Bounced)
	if !errors.Is(err, ErrAddress) || st.Result != Bounced || e.Status.Result != Bounced {
		t.Fatalf("bad address: %v %v", err, st.Result)
	}

	_, _, err = OpenSession(ctx, "tm.test", &SessionOptions{Host: "127.0.0.1", Port: refused})
	checkClass(t, "OpenSession to a refused port", err, ErrConnect.Code, Deferred)

	port := fakeSMTP(t, 0)
	st, err = deliver(port, "defer-x@tm.test")
	checkClass(t, "450 to RCPT", err, ErrRejected.Code, Deferred)
	if !errors.Is(err, ErrRejected) || st.Code != 450 {
		t.Fatalf("450 to RCPT: %v %+v", err, st)
	}
	same("450 to RCPT", st, err)
	st, err = deliver(port, "reject-x@tm.test")
	checkClass(t, "550 to RCPT", err, ErrRejected.Code, Bounced)
	same("550 to RCPT", st, err)
	// Partial: the class of the failed recipients, the worst of them.
	st, err = deliver(port, "ok@tm.test", "reject-x@tm.test", "defer-x@tm.test")
	checkClass(t, "partial 550+450", err, ErrPartial.Code, Deferred)
	if st.RcptDelivered != 1 || st.RcptBounced != 1 || st.RcptDeferred != 1 {
		t.Fatalf("partial counts: %+v", st)
	}
	st, err = deliver(port, "ok@tm.test")
	if err != nil || st.Err() != nil {
		t.Fatalf("delivered: %v %v", err, st.Err())
	}

	// No reply to the end of data: uncertain.
	drop := fakeSMTP(t, 1)
	st, err = deliver(drop, "b@tm.test")
	checkClass(t, "no reply to the end of data", err, ErrUncertain.Code, Uncertain)
	same("no reply to the end of data", st, err)
	// 101 recipients: the first transaction (100) delivered, no reply to
	// the second's end of data: partial, of class uncertain, and not the
	// code TM_EUNCERTAIN.
	drop2 := fakeSMTP(t, 2)
	to := make([]string, 101)
	for i := range to {
		to[i] = fmt.Sprintf("r%d@tm.test", i)
	}
	st, err = deliver(drop2, to...)
	checkClass(t, "partial uncertain", err, ErrPartial.Code, Uncertain)
	if errors.Is(err, ErrUncertain) || st.RcptDelivered != 100 || st.RcptUncertain != 1 || st.Transactions != 2 {
		t.Fatalf("partial uncertain: %v %+v", err, st)
	}

	// A session: Send's error has the class too.
	s, ost, err := OpenSession(ctx, "tm.test", &SessionOptions{Host: "127.0.0.1", Port: fakeSMTP(t, 1)})
	if err != nil {
		t.Fatalf("open: %v %+v", err, ost)
	}
	defer s.Close()
	if ost.Err() == nil || errors.Is(ost.Err(), ErrResultDeferred) { // nothing delivered, no class
		t.Fatalf("the status of OpenSession: %v %v", ost.Result, ost.Err())
	}
	if _, err = s.StartTLS(nil); err != nil { // no STARTTLS offered: plaintext
		t.Fatal(err)
	}
	st, err = s.Send(Message{From: "a@tm.test", To: []string{"b@tm.test"}, Data: body})
	checkClass(t, "Send, no reply to the end of data", err, ErrUncertain.Code, Uncertain)
	same("Send", st, err)
}

// Real outcomes from Postfix and dnsmasq.
func TestErrorClassesPeers(t *testing.T) {
	ctx := peersContext(t, ContextOptions{})
	send := func(p *Policy, to ...string) (DeliveryStatus, error) {
		return Deliver(ctx, Message{From: "sender@tm.test", To: to, Data: body}, p, nil)
	}
	st, err := send(nil, "defer-go@valid.tm.test")
	checkClass(t, "defer", err, ErrRejected.Code, Deferred)
	if st.Result != Deferred || st.Code/100 != 4 {
		t.Fatalf("defer: %v %+v", err, st)
	}
	st, err = send(nil, "reject-go@valid.tm.test")
	checkClass(t, "reject", err, ErrRejected.Code, Bounced)
	if st.Code != 550 {
		t.Fatalf("reject: %+v", st)
	}
	ok := local("classes")
	st, err = send(nil, ok+"@valid.tm.test", "reject-x@valid.tm.test")
	e := checkClass(t, "partial", err, ErrPartial.Code, Bounced)
	if len(e.Status.Recipients) != 2 || e.Status.Recipients[0].Result != Delivered ||
		e.Status.Recipients[1].Result != Bounced {
		t.Fatalf("partial: %+v", e.Status.Recipients)
	}
	waitMail(t, "valid.tm.test", ok)
	st, err = send(nil, "x@nullmx.tm.test")
	checkClass(t, "null MX", err, ErrNullMX.Code, Bounced)

	// TLS required, not offered: ErrTLSRequired, a Deferred.
	st, err = send(&Policy{RequireTLS: On}, local("plain")+"@plain.tm.test")
	e = checkClass(t, "TLS required", err, ErrTLSRequired.Code, Deferred)
	if !errors.Is(err, ErrTLSRequired) || e.Status.RequireTLSSource != SourceMessage || st.TLS {
		t.Fatalf("TLS required: %v %+v", err, e.Status)
	}
	if st, err = send(nil, local("classes")+"@valid.tm.test"); err != nil || st.Err() != nil {
		t.Fatalf("delivered: %v %v", err, st.Err())
	}

	_, _, err = OpenSession(ctx, "nullmx.tm.test", nil)
	checkClass(t, "OpenSession null MX", err, ErrNullMX.Code, Bounced)
	_, _, err = OpenSession(ctx, "nosuch.tm.test", nil)
	checkClass(t, "OpenSession no such domain", err, ErrNoDomain.Code, Bounced)
	s, _, err := OpenSession(ctx, "plain.tm.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = s.StartTLS(&Policy{RequireTLS: On})
	e = checkClass(t, "StartTLS on plain", err, ErrTLSRequired.Code, Deferred)
	if e.Status.Result != Deferred || e.Status.TLS {
		t.Fatalf("StartTLS on plain: %+v", e.Status)
	}
}
