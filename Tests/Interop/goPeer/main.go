// ttrpc-go-peer: the reference side of the ttRPC interoperability tests and benchmark, built
// offline against Debian's golang-github-containerd-ttrpc-dev (containerd's own ttRPC, v1.1.1).
//
//	ttrpc-go-peer server -socket PATH           serve kata.echo.v1.Echo (same semantics as Swift's)
//	ttrpc-go-peer scenarios -socket PATH        run the client scenarios against a server
//	ttrpc-go-peer bench -socket PATH -inflight N -duration D -payload B
//
// Messages are encoded by hand (no generated Go code): kata.echo.v1.EchoRequest/EchoResponse
// from Protos/kata/echo.proto.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"github.com/gogo/protobuf/proto"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const service = "kata.echo.v1.Echo"

// raw carries pre-encoded protobuf bytes through ttrpc's gogo codec.
type raw struct{ b []byte }

func (r *raw) Reset()                   { r.b = nil }
func (r *raw) String() string           { return fmt.Sprintf("%x", r.b) }
func (r *raw) ProtoMessage()            {}
func (r *raw) Marshal() ([]byte, error) { return r.b, nil }
func (r *raw) Unmarshal(b []byte) error { r.b = append([]byte(nil), b...); return nil }

type echoRequest struct {
	payload      []byte
	delayMs      uint64
	failCode     int64
	failMessage  string
	responseSize uint64
}

type echoResponse struct {
	payload      []byte
	metadata     []string
	deadlineNano int64
}

func (r echoRequest) encode() []byte {
	b := proto.NewBuffer(nil)
	if len(r.payload) > 0 {
		b.EncodeVarint(1<<3 | 2)
		b.EncodeRawBytes(r.payload)
	}
	if r.delayMs != 0 {
		b.EncodeVarint(2 << 3)
		b.EncodeVarint(r.delayMs)
	}
	if r.failCode != 0 {
		b.EncodeVarint(3 << 3)
		b.EncodeVarint(uint64(r.failCode))
	}
	if r.failMessage != "" {
		b.EncodeVarint(4<<3 | 2)
		b.EncodeStringBytes(r.failMessage)
	}
	if r.responseSize != 0 {
		b.EncodeVarint(5 << 3)
		b.EncodeVarint(r.responseSize)
	}
	return b.Bytes()
}

// fields walks a message, calling f for each varint (v) or length-delimited (bs) field.
func fields(data []byte, f func(num uint64, v uint64, bs []byte)) error {
	for len(data) > 0 {
		key, n := proto.DecodeVarint(data)
		if n == 0 {
			return fmt.Errorf("bad key")
		}
		data = data[n:]
		switch key & 7 {
		case 0:
			v, n := proto.DecodeVarint(data)
			if n == 0 {
				return fmt.Errorf("bad varint")
			}
			data = data[n:]
			f(key>>3, v, nil)
		case 2:
			l, n := proto.DecodeVarint(data)
			if n == 0 || uint64(len(data)-n) < l {
				return fmt.Errorf("bad length")
			}
			f(key>>3, 0, data[n:n+int(l)])
			data = data[n+int(l):]
		default:
			return fmt.Errorf("unexpected wire type %d", key&7)
		}
	}
	return nil
}

func decodeRequest(data []byte) (r echoRequest, err error) {
	err = fields(data, func(n, v uint64, bs []byte) {
		switch n {
		case 1:
			r.payload = bs
		case 2:
			r.delayMs = v
		case 3:
			r.failCode = int64(int32(v))
		case 4:
			r.failMessage = string(bs)
		case 5:
			r.responseSize = v
		}
	})
	return
}

func (r echoResponse) encode() []byte {
	b := proto.NewBuffer(nil)
	if len(r.payload) > 0 {
		b.EncodeVarint(1<<3 | 2)
		b.EncodeRawBytes(r.payload)
	}
	for _, m := range r.metadata {
		b.EncodeVarint(2<<3 | 2)
		b.EncodeStringBytes(m)
	}
	if r.deadlineNano != 0 {
		b.EncodeVarint(3 << 3)
		b.EncodeVarint(uint64(r.deadlineNano))
	}
	return b.Bytes()
}

func decodeResponse(data []byte) (r echoResponse, err error) {
	err = fields(data, func(n, v uint64, bs []byte) {
		switch n {
		case 1:
			r.payload = bs
		case 2:
			r.metadata = append(r.metadata, string(bs))
		case 3:
			r.deadlineNano = int64(v)
		}
	})
	return
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// ---- server ---------------------------------------------------------------------------------

func serve(path string) {
	s, err := ttrpc.NewServer()
	if err != nil {
		fatal(err)
	}
	s.Register(service, map[string]ttrpc.Method{
		"Echo": func(ctx context.Context, unmarshal func(interface{}) error) (interface{}, error) {
			started := time.Now()
			var in raw
			if err := unmarshal(&in); err != nil {
				return nil, err
			}
			req, err := decodeRequest(in.b)
			if err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "bad EchoRequest: %v", err)
			}
			if req.delayMs > 0 {
				select {
				case <-time.After(time.Duration(req.delayMs) * time.Millisecond):
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			if req.failCode != 0 {
				return nil, status.Error(codes.Code(req.failCode), req.failMessage)
			}
			resp := echoResponse{payload: req.payload}
			if req.responseSize > 0 {
				resp.payload = pattern(int(req.responseSize))
			}
			if md, ok := ttrpc.GetMetadata(ctx); ok {
				keys := make([]string, 0, len(md))
				for k := range md {
					keys = append(keys, k)
				}
				sort.Strings(keys)
				for _, k := range keys {
					for _, v := range md[k] {
						resp.metadata = append(resp.metadata, k+"="+v)
					}
				}
			}
			if dl, ok := ctx.Deadline(); ok {
				resp.deadlineNano = int64(dl.Sub(started))
			}
			return &raw{b: resp.encode()}, nil
		},
	})
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		fatal(err)
	}
	fmt.Println("serving", path)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		os.Remove(path)
		os.Exit(0)
	}()
	if err := s.Serve(context.Background(), l); err != nil && !errors.Is(err, ttrpc.ErrServerClosed) {
		fatal(err)
	}
}

// ---- client scenarios -----------------------------------------------------------------------

type runner struct {
	path           string
	passed, failed int
}

func (r *runner) client() *ttrpc.Client {
	conn, err := net.Dial("unix", r.path)
	if err != nil {
		fatal(err)
	}
	return ttrpc.NewClient(conn)
}

func (r *runner) run(name string, f func(c *ttrpc.Client) error) {
	c := r.client()
	defer c.Close()
	if err := f(c); err != nil {
		r.failed++
		fmt.Printf("FAIL %s: %v\n", name, err)
		return
	}
	r.passed++
	fmt.Printf("ok   %s\n", name)
}

func call(ctx context.Context, c *ttrpc.Client, req echoRequest) (echoResponse, error) {
	var out raw
	if err := c.Call(ctx, service, "Echo", &raw{b: req.encode()}, &out); err != nil {
		return echoResponse{}, err
	}
	return decodeResponse(out.b)
}

func expectCode(err error, code codes.Code, message string) error {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("want status %v, got %v", code, err)
	}
	if st.Code() != code || (message != "" && st.Message() != message) {
		return fmt.Errorf("want %v %q, got %v %q", code, message, st.Code(), st.Message())
	}
	return nil
}

func stillServes(c *ttrpc.Client) error {
	resp, err := call(context.Background(), c, echoRequest{payload: []byte("after")})
	if err != nil {
		return fmt.Errorf("connection unusable afterwards: %v", err)
	}
	if string(resp.payload) != "after" {
		return fmt.Errorf("afterwards: got %q", resp.payload)
	}
	return nil
}

func scenarios(path string) {
	r := &runner{path: path}
	bg := context.Background()

	r.run("unary", func(c *ttrpc.Client) error {
		resp, err := call(bg, c, echoRequest{payload: []byte("hello")})
		if err != nil {
			return err
		}
		if string(resp.payload) != "hello" {
			return fmt.Errorf("payload %q", resp.payload)
		}
		return nil
	})

	r.run("100 concurrent calls on one connection", func(c *ttrpc.Client) error {
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				want := []byte(fmt.Sprintf("call-%03d", i))
				// Staggered delays make responses come back out of order.
				resp, err := call(bg, c, echoRequest{payload: want, delayMs: uint64((100 - i) % 7)})
				if err != nil {
					errs <- err
				} else if !bytes.Equal(resp.payload, want) {
					errs <- fmt.Errorf("call %d got %q", i, resp.payload)
				}
			}(i)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			return err
		}
		return nil
	})

	r.run("error status keeps code and message", func(c *ttrpc.Client) error {
		_, err := call(bg, c, echoRequest{failCode: 5, failMessage: "container c1: not found"})
		if err := expectCode(err, codes.NotFound, "container c1: not found"); err != nil {
			return err
		}
		_, err = call(bg, c, echoRequest{failCode: 9, failMessage: "process not created"})
		return expectCode(err, codes.FailedPrecondition, "process not created")
	})

	r.run("deadline reaches the handler", func(c *ttrpc.Client) error {
		ctx, cancel := context.WithTimeout(bg, 2*time.Second)
		defer cancel()
		resp, err := call(ctx, c, echoRequest{payload: []byte("d")})
		if err != nil {
			return err
		}
		if resp.deadlineNano < int64(1500*time.Millisecond) || resp.deadlineNano > int64(2*time.Second) {
			return fmt.Errorf("handler saw deadline in %v", time.Duration(resp.deadlineNano))
		}
		return nil
	})

	r.run("deadline exceeded", func(c *ttrpc.Client) error {
		ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := call(ctx, c, echoRequest{delayMs: 3000})
		if err == nil {
			return fmt.Errorf("call succeeded")
		}
		if !errors.Is(err, context.DeadlineExceeded) && expectCode(err, codes.DeadlineExceeded, "") != nil {
			return fmt.Errorf("want DeadlineExceeded, got %v", err)
		}
		if time.Since(start) > time.Second {
			return fmt.Errorf("took %v", time.Since(start))
		}
		return stillServes(c)
	})

	r.run("payload just under 4 MiB", func(c *ttrpc.Client) error {
		// Request envelope overhead is ~40 bytes; the response ~5.
		want := pattern(4<<20 - 256)
		resp, err := call(bg, c, echoRequest{payload: want})
		if err != nil {
			return err
		}
		if !bytes.Equal(resp.payload, want) {
			return fmt.Errorf("payload differs (%d bytes back)", len(resp.payload))
		}
		return nil
	})

	r.run("oversized frame gets ResourceExhausted, connection stays usable", func(c *ttrpc.Client) error {
		// ttrpc v1.1.1's client sends whatever it is given.
		_, err := call(bg, c, echoRequest{payload: pattern(4<<20 + 1024)})
		if err := expectCode(err, codes.ResourceExhausted, ""); err != nil {
			return err
		}
		if st, _ := status.FromError(err); !strings.Contains(st.Message(), "exceed maximum message size of 4194304") {
			return fmt.Errorf("message %q", st.Message())
		}
		return stillServes(c)
	})

	r.run("unknown method and service", func(c *ttrpc.Client) error {
		var out raw
		err := c.Call(bg, service, "Nope", &raw{}, &out)
		if err := expectCode(err, codes.Unimplemented, "method Nope"); err != nil {
			return err
		}
		err = c.Call(bg, "no.such.Service", "Echo", &raw{}, &out)
		if err := expectCode(err, codes.Unimplemented, "service no.such.Service"); err != nil {
			return err
		}
		return stillServes(c)
	})

	r.run("metadata reaches the handler", func(c *ttrpc.Client) error {
		md := ttrpc.MD{}
		md.Set("containerd-namespace-ttrpc", "default")
		md.Append("x-multi", "a", "b")
		resp, err := call(ttrpc.WithMetadata(bg, md), c, echoRequest{payload: []byte("m")})
		if err != nil {
			return err
		}
		got := append([]string(nil), resp.metadata...)
		sort.Strings(got)
		want := []string{"containerd-namespace-ttrpc=default", "x-multi=a", "x-multi=b"}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			return fmt.Errorf("metadata %v", got)
		}
		return nil
	})

	fmt.Printf("%d passed, %d failed\n", r.passed, r.failed)
	if r.failed > 0 {
		os.Exit(1)
	}
}

// ---- benchmark ------------------------------------------------------------------------------

func bench(path string, inflight int, duration time.Duration, payload int) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		fatal(err)
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	req := &raw{b: echoRequest{payload: pattern(payload)}.encode()}
	// Warm up.
	for i := 0; i < 200; i++ {
		var out raw
		if err := c.Call(context.Background(), service, "Echo", req, &out); err != nil {
			fatal(err)
		}
	}
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	deadline := time.Now().Add(duration)
	start := time.Now()
	for w := 0; w < inflight; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 100000)
			for time.Now().Before(deadline) {
				t := time.Now()
				var out raw
				if err := c.Call(context.Background(), service, "Echo", req, &out); err != nil {
					fatal(err)
				}
				local = append(local, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 { return float64(lat[int(float64(len(lat)-1)*p)].Microseconds()) }
	fmt.Printf("calls: %d\nrps: %.0f\np50-us: %.0f\np99-us: %.0f\n", len(lat), float64(len(lat))/elapsed.Seconds(), pct(0.50), pct(0.99))
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "ttrpc-go-peer:", err)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		fatal(fmt.Errorf("usage: ttrpc-go-peer server|scenarios|bench -socket PATH"))
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	path := fs.String("socket", "", "unix socket path")
	inflight := fs.Int("inflight", 1, "concurrent calls (bench)")
	duration := fs.Duration("duration", 3*time.Second, "run time (bench)")
	payload := fs.Int("payload", 64, "payload bytes (bench)")
	fs.Parse(os.Args[2:])
	if *path == "" {
		fatal(fmt.Errorf("-socket is required"))
	}
	switch os.Args[1] {
	case "server":
		serve(*path)
	case "scenarios":
		scenarios(*path)
	case "bench":
		bench(*path, *inflight, *duration, *payload)
	default:
		fatal(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
}
