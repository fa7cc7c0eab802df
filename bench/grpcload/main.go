// grpcload: a closed-loop load generator for one unary gRPC method, the gRPC
// counterpart of `wrk -t1 -cN` in bench/serving_bench.py.
//
// It opens -c connections (one HTTP/2 connection each) and keeps exactly one call in
// flight on each, sending the same request, already serialised as protobuf bytes in
// -body, for -d seconds. The request bytes are sent as they are (a pass-through codec),
// so no protobuf work is done on this side and any server answering the method is
// measured the same way. It prints one line, `BENCH_JSON {...}`, with the count of
// answered calls, the errors, and latency percentiles in microseconds, the same
// fields the wrk script prints.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
)

// rawCodec passes already serialised messages through untouched. It answers to the
// name "proto", so the wire content type is the usual application/grpc+proto.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

var _ encoding.Codec = rawCodec{}

type result struct {
	latencies []time.Duration
	errors    int
	lastError string
}

// worker connects and makes one untimed call (the TCP and HTTP/2 handshakes happen
// there), reports ready, then waits for the deadline on `start` and calls until it.
func worker(addr, method string, body []byte, ready *sync.WaitGroup, start <-chan time.Time, out *result) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		out.errors++
		out.lastError = err.Error()
		ready.Done()
		return
	}
	defer conn.Close()
	request := body
	var reply []byte
	warm, cancelWarm := context.WithTimeout(context.Background(), 10*time.Second)
	if err := conn.Invoke(warm, method, &request, &reply); err != nil {
		out.lastError = err.Error()
	}
	cancelWarm()
	ready.Done()
	until := <-start
	for time.Now().Before(until) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		err := conn.Invoke(ctx, method, &request, &reply)
		elapsed := time.Since(start)
		cancel()
		if err != nil {
			out.errors++
			out.lastError = err.Error()
			continue
		}
		out.latencies = append(out.latencies, elapsed)
	}
}

func percentile(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	index := int(p / 100 * float64(len(sorted)-1))
	return float64(sorted[index].Microseconds())
}

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "host:port of the gRPC server")
	method := flag.String("method", "/inference.GRPCInferenceService/ModelInfer", "full method name")
	bodyFile := flag.String("body", "", "file holding the serialised request message")
	connections := flag.Int("c", 16, "connections, one call in flight on each")
	seconds := flag.Float64("d", 10, "seconds to run")
	flag.Parse()

	body, err := os.ReadFile(*bodyFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	results := make([]result, *connections)
	var wg, ready sync.WaitGroup
	start := make(chan time.Time, *connections)
	for i := range results {
		wg.Add(1)
		ready.Add(1)
		go func(r *result) {
			defer wg.Done()
			worker(*addr, *method, body, &ready, start, r)
		}(&results[i])
	}
	ready.Wait() // every connection made and warm: the clock starts now
	began := time.Now()
	until := began.Add(time.Duration(*seconds * float64(time.Second)))
	for range results {
		start <- until
	}
	wg.Wait()
	duration := time.Since(began)

	var all []time.Duration
	errors := 0
	lastError := ""
	for _, r := range results {
		all = append(all, r.latencies...)
		errors += r.errors
		if r.lastError != "" {
			lastError = r.lastError
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	var total time.Duration
	for _, d := range all {
		total += d
	}
	mean := 0.0
	if len(all) > 0 {
		mean = float64(total.Microseconds()) / float64(len(all))
	}
	maxUs := 0.0
	if len(all) > 0 {
		maxUs = float64(all[len(all)-1].Microseconds())
	}
	summary := map[string]any{
		"requests":      len(all),
		"duration_us":   duration.Microseconds(),
		"errors_status": errors,
		"last_error":    lastError,
		"p50_us":        percentile(all, 50),
		"p90_us":        percentile(all, 90),
		"p99_us":        percentile(all, 99),
		"max_us":        maxUs,
		"mean_us":       mean,
	}
	line, _ := json.Marshal(summary)
	fmt.Printf("BENCH_JSON %s\n", line)
}
