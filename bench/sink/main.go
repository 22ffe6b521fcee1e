// Command bench_sink is a cheap SMTP receiving server for the libtlsmail
// benchmark (case 7, see bench/README.md): it accepts every message and
// throws the content away, so that a client on the same cores is measured
// rather than the server.
//
//	bench_sink --listen 127.0.0.2:0 --cert valid.pem --key valid.key
//	           [--hostname mx-valid.tm.test] [--max-seconds 600]
//	           [--ready-file PATH] [--max-conns 512]
//
// It listens on a loopback address only (127.0.0.0/8 or ::1, never a port
// below 1024), serves each connection in its own goroutine and speaks enough
// ESMTP for a client: EHLO (PIPELINING, SIZE, 8BITMIME, SMTPUTF8, CHUNKING,
// ENHANCEDSTATUSCODES, STARTTLS before TLS), HELO, MAIL, RCPT, DATA,
// BDAT, RSET, NOOP, QUIT and STARTTLS (TLS 1.2 and 1.3, Go's default session
// tickets).  Commands must come in order (EHLO, MAIL, RCPT, DATA/BDAT) so that
// a client that forgets, say, the EHLO after STARTTLS fails here as it would
// on a real server.  SIZE is advertised, not enforced.
//
// Replies are written through a bufio.Writer that is flushed only when the
// bufio.Reader holds no more input, i.e. before a read that may block: a
// pipelined group of commands gets its replies in one write, as from a real
// pipelining server.
//
// With --ready-file it writes "PORT\n" there once listening (--listen with
// port 0 picks a free port).  It exits with status 0 on SIGTERM, SIGINT or
// after --max-seconds, and prints a one-line JSON summary to stderr:
// connections, messages (messages_bdat of them by BDAT), content bytes,
// TLS handshakes (tls_resumed of them resumed), errors, and cpu_s, the
// process's user+sys CPU from the moment it listens (startup_cpu_s before).
// Standard library only.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

const (
	maxLine  = 4096              // longest command line, CRLF included
	maxSkip  = 1 << 20           // bytes of an over-long line skipped before hanging up
	maxRcpt  = 1000              // recipients per transaction
	bufSize  = 32 << 10          // read and write buffer per connection
	idle     = 120 * time.Second // longest wait for the client, per read or write
	sizeText = "52428800"        // the SIZE advertised
)

var errLineTooLong = errors.New("line too long")

// counters are the totals printed at exit.
type counters struct {
	conns, refused, msgs, bdat, bytes, tls, resumed, errs atomic.Int64
}

type server struct {
	hostname  string
	tlsConf   *tls.Config // nil: no STARTTLS
	greeting  string
	heloReply string
	ehloPlain string // EHLO reply before TLS (offers STARTTLS when tlsConf is set)
	ehloTLS   string // EHLO reply after STARTTLS
	slots     chan struct{}
	n         counters
}

func newServer(hostname string, conf *tls.Config, maxConns int) *server {
	s := &server{hostname: hostname, tlsConf: conf, slots: make(chan struct{}, maxConns)}
	s.greeting = "220 " + hostname + " ESMTP sink\r\n"
	s.heloReply = "250 " + hostname + "\r\n"
	ext := []string{hostname, "PIPELINING", "SIZE " + sizeText, "8BITMIME", "SMTPUTF8",
		"CHUNKING", "ENHANCEDSTATUSCODES"}
	s.ehloTLS = multiline(250, ext)
	if conf != nil {
		ext = append(ext, "STARTTLS")
	}
	s.ehloPlain = multiline(250, ext)
	return s
}

// multiline formats a reply of several lines: "250-a", "250-b", "250 c".
func multiline(code int, lines []string) string {
	var b bytes.Buffer
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		fmt.Fprintf(&b, "%d%s%s\r\n", code, sep, l)
	}
	return b.String()
}

// acceptLoop serves ln until it is closed; every connection gets its own
// goroutine, up to cap(slots) at once (beyond that: 421 and close).
func (s *server) acceptLoop(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: back off; main's timer bounds the loop.
			fmt.Fprintf(os.Stderr, "bench_sink: accept: %v\n", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		select {
		case s.slots <- struct{}{}:
			s.n.conns.Add(1)
			go func() {
				defer func() { <-s.slots }()
				sess := newSession(s, c)
				sess.serve()
			}()
		default:
			s.n.refused.Add(1)
			c.SetDeadline(time.Now().Add(time.Second))
			c.Write([]byte("421 4.3.2 " + s.hostname + " too many connections\r\n"))
			c.Close()
		}
	}
}

// session is the state of one connection.
type session struct {
	srv   *server
	conn  net.Conn // the TCP connection, then the *tls.Conn over it
	r     *bufio.Reader
	w     *bufio.Writer
	tls   bool
	helo  bool  // EHLO or HELO seen (since STARTTLS)
	mail  bool  // MAIL accepted
	rcpts int   // recipients accepted
	bdat  bool  // a BDAT transaction is under way
	size  int64 // content bytes of the transaction so far
}

func newSession(srv *server, c net.Conn) *session {
	return &session{srv: srv, conn: c, r: bufio.NewReaderSize(c, bufSize),
		w: bufio.NewWriterSize(c, bufSize)}
}

func (s *session) serve() {
	defer s.conn.Close()
	s.reply(s.srv.greeting)
	// Ends with QUIT, an error, EOF or the idle deadline; the process's
	// --max-seconds bounds it in any case.
	for {
		line, err := s.readLine()
		if err == errLineTooLong {
			s.reply("500 5.5.2 Error: line too long\r\n")
			continue
		}
		if err != nil {
			s.fail(err)
			return
		}
		if !s.command(line) {
			return
		}
	}
}

// fail counts an error that ended the connection; a client hanging up
// (EOF, reset) does not count.
func (s *session) fail(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, syscall.ECONNRESET) {
		return
	}
	s.srv.n.errs.Add(1)
}

// reply queues a reply; it is written by wait (or flushNow).
func (s *session) reply(text string) {
	s.w.WriteString(text)
}

// wait is called before every read that may block: when the reader holds
// no more input, the queued replies go out in one write and the idle
// deadline is re-armed.
func (s *session) wait() error {
	if s.r.Buffered() > 0 {
		return nil
	}
	if err := s.conn.SetDeadline(time.Now().Add(idle)); err != nil {
		return err
	}
	if s.w.Buffered() > 0 {
		return s.w.Flush()
	}
	return nil
}

// flushNow writes the queued replies whatever the reader holds.
func (s *session) flushNow() error {
	if err := s.conn.SetDeadline(time.Now().Add(idle)); err != nil {
		return err
	}
	return s.w.Flush()
}

// readLine returns the next command line without its line ending; the
// slice is valid until the next read.  A line longer than maxLine is
// skipped (up to maxSkip bytes) and reported as errLineTooLong.
func (s *session) readLine() ([]byte, error) {
	if err := s.wait(); err != nil {
		return nil, err
	}
	line, err := s.r.ReadSlice('\n')
	if err == nil && len(line) <= maxLine {
		line = line[:len(line)-1]
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		return line, nil
	}
	if err != nil && err != bufio.ErrBufferFull {
		return nil, err
	}
	for skipped := len(line); err == bufio.ErrBufferFull; skipped += len(line) {
		if skipped > maxSkip {
			return nil, errors.New("over-long line not ended")
		}
		if err = s.wait(); err != nil {
			return nil, err
		}
		line, err = s.r.ReadSlice('\n')
	}
	if err != nil {
		return nil, err
	}
	return nil, errLineTooLong
}

func (s *session) resetTx() {
	s.mail, s.rcpts, s.bdat, s.size = false, 0, false, 0
}

// hasPrefixFold reports whether b starts with the upper-case ASCII prefix p,
// ignoring case.
func hasPrefixFold(b []byte, p string) bool {
	return len(b) >= len(p) && bytes.EqualFold(b[:len(p)], []byte(p))
}

// command handles one command line; false ends the connection.
func (s *session) command(line []byte) bool {
	verb, arg := line, []byte(nil)
	if i := bytes.IndexByte(line, ' '); i >= 0 {
		verb, arg = line[:i], bytes.TrimSpace(line[i+1:])
	}
	for i, c := range verb { // upper-case in place: the line is ours
		if 'a' <= c && c <= 'z' {
			verb[i] = c - ('a' - 'A')
		}
	}
	switch string(verb) {
	case "EHLO", "HELO":
		if len(arg) == 0 {
			s.reply("501 5.5.4 Syntax: " + string(verb) + " hostname\r\n")
			return true
		}
		s.helo = true
		s.resetTx()
		if string(verb) == "HELO" {
			s.reply(s.srv.heloReply)
		} else if s.tls {
			s.reply(s.srv.ehloTLS)
		} else {
			s.reply(s.srv.ehloPlain)
		}
	case "MAIL":
		switch {
		case !s.helo:
			s.reply("503 5.5.1 Error: send HELO/EHLO first\r\n")
		case s.mail:
			s.reply("503 5.5.1 Error: nested MAIL command\r\n")
		case !hasPrefixFold(arg, "FROM:"):
			s.reply("501 5.5.4 Syntax: MAIL FROM:<address>\r\n")
		default:
			s.mail = true
			s.reply("250 2.1.0 Ok\r\n")
		}
	case "RCPT":
		switch {
		case !s.mail:
			s.reply("503 5.5.1 Error: need MAIL command\r\n")
		case !hasPrefixFold(arg, "TO:"):
			s.reply("501 5.5.4 Syntax: RCPT TO:<address>\r\n")
		case s.rcpts >= maxRcpt:
			s.reply("452 4.5.3 Error: too many recipients\r\n")
		default:
			s.rcpts++
			s.reply("250 2.1.5 Ok\r\n")
		}
	case "DATA":
		return s.data(arg)
	case "BDAT":
		return s.chunk(arg)
	case "RSET":
		s.resetTx()
		s.reply("250 2.0.0 Ok\r\n")
	case "NOOP":
		s.reply("250 2.0.0 Ok\r\n")
	case "QUIT":
		s.reply("221 2.0.0 Bye\r\n")
		s.flushNow()
		return false
	case "STARTTLS":
		return s.starttls(arg)
	case "":
		s.reply("500 5.5.2 Error: bad syntax\r\n")
	default:
		s.reply("502 5.5.2 Error: command not recognized\r\n")
	}
	return true
}

func (s *session) data(arg []byte) bool {
	switch {
	case len(arg) > 0:
		s.reply("501 5.5.4 Syntax: DATA\r\n")
		return true
	case s.bdat:
		s.reply("503 5.5.1 Error: BDAT transaction under way\r\n")
		return true
	case s.rcpts == 0:
		s.reply("503 5.5.1 Error: need RCPT command\r\n")
		return true
	}
	s.reply("354 End data with <CR><LF>.<CR><LF>\r\n")
	n, err := s.readData()
	if err != nil {
		s.fail(err)
		return false
	}
	s.delivered(s.size + n)
	return true
}

// readData reads the content of DATA up to the line ".", counting its
// bytes (dot-stuffing removed, the final "." line excluded).
func (s *session) readData() (int64, error) {
	var n int64
	atStart := true
	// Bounded by the client's input and the idle deadline.
	for {
		if err := s.wait(); err != nil {
			return n, err
		}
		part, err := s.r.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			return n, err
		}
		if atStart && len(part) > 0 && part[0] == '.' {
			if err == nil && (len(part) == 2 || (len(part) == 3 && part[1] == '\r')) {
				return n, nil // ".\r\n" (or ".\n")
			}
			n-- // a stuffed dot
		}
		n += int64(len(part))
		atStart = err == nil
	}
}

// chunk handles "BDAT n [LAST]": the n bytes that follow are read whatever
// the reply (RFC 3030), then the reply is queued.
func (s *session) chunk(arg []byte) bool {
	f := bytes.Fields(arg)
	last := len(f) == 2 && bytes.EqualFold(f[1], []byte("LAST"))
	var n int64 = -1
	if len(f) == 1 || last {
		if v, err := strconv.ParseInt(string(f[0]), 10, 64); err == nil && v >= 0 &&
			f[0][0] != '+' {
			n = v
		}
	}
	if n < 0 {
		// The length of what follows is unknown: the stream cannot be
		// resynchronised.
		s.reply("501 5.5.4 Syntax: BDAT size [LAST]\r\n")
		s.flushNow()
		return false
	}
	if err := s.discard(n); err != nil {
		s.fail(err)
		return false
	}
	if s.rcpts == 0 {
		s.reply("503 5.5.1 Error: need RCPT command\r\n")
		return true
	}
	s.bdat = true
	s.size += n
	if last {
		s.srv.n.bdat.Add(1)
		s.delivered(s.size)
	} else {
		s.reply("250 2.0.0 Ok: chunk received\r\n")
	}
	return true
}

// discard skips n bytes of input without copying them.
func (s *session) discard(n int64) error {
	// Each turn consumes at least one byte or fails.
	for n > 0 {
		if err := s.wait(); err != nil {
			return err
		}
		if s.r.Buffered() == 0 {
			if _, err := s.r.Peek(1); err != nil {
				return err
			}
		}
		k := int64(s.r.Buffered())
		if k > n {
			k = n
		}
		s.r.Discard(int(k))
		n -= k
	}
	return nil
}

// delivered accepts the message of the transaction and ends it.
func (s *session) delivered(size int64) {
	s.srv.n.msgs.Add(1)
	s.srv.n.bytes.Add(size)
	s.resetTx()
	s.reply("250 2.0.0 Ok: message discarded\r\n")
}

func (s *session) starttls(arg []byte) bool {
	switch {
	case s.srv.tlsConf == nil:
		s.reply("502 5.5.1 Error: command not implemented\r\n")
		return true
	case s.tls:
		s.reply("503 5.5.1 Error: TLS already active\r\n")
		return true
	case len(arg) > 0:
		s.reply("501 5.5.4 Syntax: STARTTLS\r\n")
		return true
	case s.r.Buffered() > 0:
		// Plaintext after STARTTLS would be taken for commands sent over
		// TLS (CVE-2011-0411): refuse the client.
		s.reply("554 5.5.1 Error: input pipelined after STARTTLS\r\n")
		s.flushNow()
		s.srv.n.errs.Add(1)
		return false
	}
	s.reply("220 2.0.0 Ready to start TLS\r\n")
	if err := s.flushNow(); err != nil {
		s.fail(err)
		return false
	}
	tc := tls.Server(s.conn, s.srv.tlsConf)
	if err := tc.Handshake(); err != nil { // the deadline of flushNow applies
		s.srv.n.errs.Add(1)
		return false
	}
	s.srv.n.tls.Add(1)
	if tc.ConnectionState().DidResume {
		s.srv.n.resumed.Add(1)
	}
	s.conn, s.tls = tc, true
	s.r.Reset(tc)
	s.w.Reset(tc)
	// RFC 3207 4.2: forget what the client said before TLS, EHLO included.
	s.helo = false
	s.resetTx()
	return true
}

// checkListen accepts a numeric loopback address and port 0 or >= 1024.
func checkListen(hostport string) error {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return err
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address (127.0.0.0/8 or ::1)", host)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 || (p > 0 && p < 1024) {
		return fmt.Errorf("port %q: want 0 (any) or 1024-65535", port)
	}
	return nil
}

// writeReady writes "PORT\n" to path through a rename, so that a reader
// never sees half of it.
func writeReady(path string, port int) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

// micro rounds seconds to microseconds.
func micro(s float64) float64 {
	return math.Round(s*1e6) / 1e6
}

func main() {
	listen := flag.String("listen", "127.0.0.2:0", "loopback address:port to listen on (port 0: any)")
	cert := flag.String("cert", "", "certificate chain (PEM) for STARTTLS")
	key := flag.String("key", "", "private key (PEM) of --cert")
	hostname := flag.String("hostname", "mx-valid.tm.test", "name in the greeting and EHLO reply")
	maxSeconds := flag.Float64("max-seconds", 600, "exit after this many seconds")
	readyFile := flag.String("ready-file", "", "write the port there once listening")
	maxConns := flag.Int("max-conns", 512, "connections served at once")
	flag.Parse()
	if flag.NArg() > 0 || *maxSeconds <= 0 || *maxConns < 1 || (*cert == "") != (*key == "") {
		flag.Usage()
		os.Exit(64)
	}
	if err := checkListen(*listen); err != nil {
		fmt.Fprintf(os.Stderr, "bench_sink: --listen %s: %v\n", *listen, err)
		os.Exit(64)
	}
	var conf *tls.Config
	if *cert != "" {
		pair, err := tls.LoadX509KeyPair(*cert, *key)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench_sink: %v\n", err)
			os.Exit(1)
		}
		conf = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench_sink: %v\n", err)
		os.Exit(1)
	}
	// Signals are caught from here on, before anyone learns the port.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	port := ln.Addr().(*net.TCPAddr).Port
	if *readyFile != "" {
		if err := writeReady(*readyFile, port); err != nil {
			fmt.Fprintf(os.Stderr, "bench_sink: %v\n", err)
			ln.Close()
			os.Exit(1)
		}
	}
	t0, cpu0 := time.Now(), cpuSeconds()
	srv := newServer(*hostname, conf, *maxConns)
	go srv.acceptLoop(ln)
	why := "max-seconds"
	select {
	case sig := <-sigs:
		why = sig.String()
	case <-time.After(time.Duration(*maxSeconds * float64(time.Second))):
	}
	ln.Close()
	n := &srv.n
	summary, _ := json.Marshal(map[string]interface{}{
		"connections":   n.conns.Load(),
		"refused":       n.refused.Load(),
		"messages":      n.msgs.Load(),
		"messages_bdat": n.bdat.Load(),
		"bytes":         n.bytes.Load(),
		"tls":           n.tls.Load(),
		"tls_resumed":   n.resumed.Load(),
		"errors":        n.errs.Load(),
		"cpu_s":         micro(cpuSeconds() - cpu0),
		"startup_cpu_s": micro(cpu0),
		"wall_s":        micro(time.Since(t0).Seconds()),
		"port":          port,
		"exit":          why,
	})
	fmt.Fprintf(os.Stderr, "bench_sink: %s\n", summary)
	os.Exit(0)
}
