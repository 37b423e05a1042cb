// Command recipes drives a cluster with etcd's own Go client (clientv3 3.4, as Debian packages it): sessions,
// Mutex and Election from clientv3/concurrency, and the v3lock and v3election services, from several
// contending workers per run, each with a client balanced over every endpoint.
//
// It prints one JSON line with what it counted and exits 1 if any session was lost (its lease died while
// the worker still held it), any call failed, or two workers held a lock or led an election at once.
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o recipes main.go
//	./recipes -endpoints https://a:2379,https://b:2379 -cacert ca.crt -cert c.crt -key c.key -runs 100
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
	"go.etcd.io/etcd/clientv3/concurrency"
	"go.etcd.io/etcd/etcdserver/api/v3election/v3electionpb"
	"go.etcd.io/etcd/etcdserver/api/v3lock/v3lockpb"
	"go.etcd.io/etcd/pkg/transport"
)

type tally struct {
	Runs         int64    `json:"runs"`
	Sessions     int64    `json:"sessions"`
	LostSessions int64    `json:"lost_sessions"`
	Acquired     int64    `json:"acquired"`
	Violations   int64    `json:"violations"`
	Errors       int64    `json:"errors"`
	FirstErrors  []string `json:"first_errors"`
	mu           sync.Mutex
}

func (t *tally) fail(what string, err error) {
	atomic.AddInt64(&t.Errors, 1)
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.FirstErrors) < 10 {
		t.FirstErrors = append(t.FirstErrors, fmt.Sprintf("%s: %v", what, err))
	}
}

// exclusive counts a critical section: a second holder at the same time is a violation.
type exclusive struct{ holders int32 }

func (x *exclusive) enter(t *tally) {
	if atomic.AddInt32(&x.holders, 1) != 1 {
		atomic.AddInt64(&t.Violations, 1)
	}
	atomic.AddInt64(&t.Acquired, 1)
	time.Sleep(2 * time.Millisecond)
}

func (x *exclusive) leave() { atomic.AddInt32(&x.holders, -1) }

func main() {
	endpoints := flag.String("endpoints", "", "comma-separated client URLs")
	cacert := flag.String("cacert", "", "CA bundle")
	cert := flag.String("cert", "", "client certificate")
	key := flag.String("key", "", "client key")
	runs := flag.Int("runs", 100, "runs")
	workers := flag.Int("workers", 3, "contending workers per run")
	prefix := flag.String("prefix", "/go-recipes/", "key prefix")
	flag.Parse()

	cfg := clientv3.Config{Endpoints: strings.Split(*endpoints, ","), DialTimeout: 5 * time.Second}
	if *cert != "" {
		tlsInfo := transport.TLSInfo{CertFile: *cert, KeyFile: *key, TrustedCAFile: *cacert}
		tlsConfig, err := tlsInfo.ClientConfig()
		if err != nil {
			fmt.Fprintln(os.Stderr, "tls:", err)
			os.Exit(2)
		}
		cfg.TLS = tlsConfig
	}
	t := &tally{FirstErrors: []string{}}
	var mutexes, elections, locks, campaigns exclusive
	for run := 0; run < *runs; run++ {
		var wg sync.WaitGroup
		for w := 0; w < *workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				worker(cfg, t, *prefix, &mutexes, &elections, &locks, &campaigns, fmt.Sprintf("run%d-w%d", run, w))
			}(w)
		}
		wg.Wait()
		t.Runs++
	}
	out, _ := json.Marshal(t)
	fmt.Println(string(out))
	if t.LostSessions > 0 || t.Errors > 0 || t.Violations > 0 {
		os.Exit(1)
	}
}

func worker(cfg clientv3.Config, t *tally, prefix string, mutexes, elections, locks, campaigns *exclusive, me string) {
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.fail("client", err)
		return
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.fail("session", err)
		return
	}
	atomic.AddInt64(&t.Sessions, 1)
	defer s.Close()

	// concurrency.Mutex: KV, Lease and Watch from the client side.
	m := concurrency.NewMutex(s, prefix+"mutex")
	if err := m.Lock(ctx); err != nil {
		t.fail("Mutex.Lock", err)
	} else {
		mutexes.enter(t)
		mutexes.leave()
		if err := m.Unlock(ctx); err != nil {
			t.fail("Mutex.Unlock", err)
		}
	}

	// concurrency.Election.
	e := concurrency.NewElection(s, prefix+"election")
	if err := e.Campaign(ctx, me); err != nil {
		t.fail("Election.Campaign", err)
	} else {
		elections.enter(t)
		leader, err := e.Leader(ctx)
		if err != nil {
			t.fail("Election.Leader", err)
		} else if string(leader.Kvs[0].Value) != me {
			t.fail("Election.Leader", fmt.Errorf("leader is %q, not %q", leader.Kvs[0].Value, me))
		}
		elections.leave()
		if err := e.Resign(ctx); err != nil {
			t.fail("Election.Resign", err)
		}
	}

	// The v3lock service, with the session's lease.
	lockc := v3lockpb.NewLockClient(cli.ActiveConnection())
	held, err := lockc.Lock(ctx, &v3lockpb.LockRequest{Name: []byte(prefix + "v3lock"), Lease: int64(s.Lease())})
	if err != nil {
		t.fail("v3lock.Lock", err)
	} else {
		locks.enter(t)
		locks.leave()
		if _, err := lockc.Unlock(ctx, &v3lockpb.UnlockRequest{Key: held.Key}); err != nil {
			t.fail("v3lock.Unlock", err)
		}
	}

	// The v3election service.
	ec := v3electionpb.NewElectionClient(cli.ActiveConnection())
	name := []byte(prefix + "v3election")
	won, err := ec.Campaign(ctx, &v3electionpb.CampaignRequest{Name: name, Lease: int64(s.Lease()), Value: []byte(me)})
	if err != nil {
		t.fail("v3election.Campaign", err)
	} else {
		campaigns.enter(t)
		if _, err := ec.Proclaim(ctx, &v3electionpb.ProclaimRequest{Leader: won.Leader, Value: []byte(me + "'")}); err != nil {
			t.fail("v3election.Proclaim", err)
		}
		leader, err := ec.Leader(ctx, &v3electionpb.LeaderRequest{Name: name})
		if err != nil {
			t.fail("v3election.Leader", err)
		} else if string(leader.Kv.Value) != me+"'" {
			t.fail("v3election.Leader", fmt.Errorf("leader value %q, not %q", leader.Kv.Value, me+"'"))
		}
		campaigns.leave()
		if _, err := ec.Resign(ctx, &v3electionpb.ResignRequest{Leader: won.Leader}); err != nil {
			t.fail("v3election.Resign", err)
		}
	}

	// The session must still be alive: its keep-alives reached a member that knew the lease.
	select {
	case <-s.Done():
		atomic.AddInt64(&t.LostSessions, 1)
		return
	default:
	}
	ttl, err := cli.TimeToLive(ctx, s.Lease())
	if err != nil {
		t.fail("TimeToLive", err)
	} else if ttl.TTL <= 0 {
		atomic.AddInt64(&t.LostSessions, 1)
	}
}
