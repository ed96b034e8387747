package main

// Telegram at scale (CONTRACT.md §7 "Many instances"): gateway processes on
// one Redis and one PostgreSQL, polling one bot token on the fake Bot API
// of the test process.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/telegram/telegramtest"
)

// gatewayProc is a gateway process of startGateway.
type gatewayProc struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	err    error
	url    string
	killed bool
}

// startGateway starts one gateway process on the backend with env added
// and waits until it listens. It is stopped with SIGTERM when the test ends
// unless the test killed it.
func startGateway(t *testing.T, b *backend, extra map[string]string) *gatewayProc {
	t.Helper()
	env := b.env()
	for k, v := range extra {
		env[k] = v
	}
	return startProcess(t, env, t.TempDir())
}

// startProcess starts one gateway process with the SLUICE_ environment env
// (none of the test's own) and the data directory data, and waits until it
// listens. It is stopped with SIGTERM when the test ends unless the test
// killed it.
func startProcess(t *testing.T, env map[string]string, data string) *gatewayProc {
	t.Helper()
	var base []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") {
			base = append(base, kv)
		}
	}
	base = append(base, execMainEnv+"=1")
	for k, v := range env {
		base = append(base, k+"="+v)
	}
	p := &gatewayProc{out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "serve", "--addr", "127.0.0.1:0", "--data", data)
	p.cmd.Env = base
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		if p.killed {
			return
		}
		if !p.terminate() {
			t.Errorf("gateway did not stop within 30s of SIGTERM")
		}
		switch out := p.out.String(); {
		case p.err != nil:
			t.Errorf("gateway: %v; its output:\n%s", p.err, out)
		case t.Failed():
			t.Logf("gateway's warnings and errors:\n%s", warnings(out, 20))
			t.Logf("gateway's telegram lines (who polled when):\n%s", firstLines(out, 40, func(line string) bool { return strings.Contains(line, "telegram:") }))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for p.url == "" {
		if m := runningAt.FindStringSubmatch(p.out.String()); m != nil {
			p.url = m[1]
			break
		}
		select {
		case <-p.done:
			t.Fatalf("gateway exited at start: %v\n%s", p.err, p.out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway did not start within 60s:\n%s", p.out)
		}
	}
	return p
}

// kill kills the process with SIGKILL, as a crash would.
func (p *gatewayProc) kill(t *testing.T) {
	t.Helper()
	p.killed = true
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// stop stops the process with SIGTERM, as a deploy would, and waits until
// it exits (30 s at most).
func (p *gatewayProc) stop(t *testing.T) {
	t.Helper()
	p.killed = true
	if !p.terminate() {
		t.Fatal("gateway did not stop within 30s of SIGTERM")
	}
	if p.err != nil {
		t.Fatalf("gateway: %v; its output:\n%s", p.err, p.out)
	}
}

// terminate sends the process SIGTERM and waits until it exits; after 30 s
// it kills it, and reports false.
func (p *gatewayProc) terminate() bool {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		return false
	}
}

// leads reports how many times the process became the poller.
func (p *gatewayProc) leads() int {
	return strings.Count(p.out.String(), "telegram: this instance polls")
}

// TestTelegramFailover: gateway processes poll one token on the fake Bot
// API. At any moment one polls (the fake answers 409 to a second poller,
// and the test fails on any); when the poller is killed (SIGKILL) another
// takes over within 15 s, and every update sent meanwhile is answered
// exactly once. Round 1 kills one of three, round 2 one of the two left,
// and each later round one of three again. It logs the failover times:
// from the kill to the first getUpdates after it.
//
// A user's /model choice, made before the kills, holds on the gateway that
// polls after them.
//
// SLUICE_TEST_TG_KILLS sets the number of rounds (default 3).
func TestTelegramFailover(t *testing.T) {
	rounds := 3
	if n, err := strconv.Atoi(os.Getenv("SLUICE_TEST_TG_KILLS")); err == nil && n > 0 {
		rounds = n
	}
	testFailover(t, nil, rounds)
}

// TestTelegramFailoverPostgres: as TestTelegramFailover, one round, with
// the lease and the record of updates in PostgreSQL (embedded counters, no
// Redis).
func TestTelegramFailoverPostgres(t *testing.T) {
	testFailover(t, map[string]string{"SLUICE_QUOTA_STORE": "embedded"}, 1)
}

func testFailover(t *testing.T, extra map[string]string, rounds int) {
	if testing.Short() {
		t.Skip("starts gateway processes")
	}
	b := sharedBackend(t)
	api := telegramtest.NewServer(t, botToken)
	env := map[string]string{"SLUICE_TELEGRAM_TOKEN": botToken, "SLUICE_TELEGRAM_API_URL": api.URL}
	for k, v := range extra {
		env[k] = v
	}

	var procs []*gatewayProc
	for range 3 {
		procs = append(procs, startGateway(t, b, env))
	}
	user := int64(7000)
	asked := map[int64]bool{}
	ask := func(n int) {
		for range n {
			user++
			asked[user] = true
			api.Say(user, fmt.Sprintf("a kite for %d", user))
		}
	}
	answered := func() {
		t.Helper()
		for u := range asked {
			api.WaitSentTo(u, 1)
		}
	}
	const chooser = 6999
	api.Say(chooser, "/model sluice-mosaic")
	wantBotText(t, api.WaitSentTo(chooser, 1)[0], "now use sluice-mosaic")
	ask(5)
	answered()
	var failovers []time.Duration
	for r := range rounds {
		if r >= 2 {
			procs = append(procs, startGateway(t, b, env)) // three running again
		}
		var live []*gatewayProc
		for _, p := range procs {
			if !p.killed {
				live = append(live, p)
			}
		}
		l := livePoller(t, live)
		// The kill comes once every answer is finished in the journal: a
		// kill between a photo's send and its finish (a database write)
		// would have the update answered again by the claimer (see
		// telegram/journal.go), which this test would count as a double.
		journalSettled(t, b)
		killedAt := time.Now()
		l.kill(t)
		ask(3) // while nobody polls
		deadline := killedAt.Add(30 * time.Second)
		var took time.Duration
		for took == 0 {
			// The dead poller's call in flight is never answered: a
			// call that came after the kill is a survivor's.
			for _, c := range api.Calls("getUpdates") {
				if c.Start.After(killedAt) {
					took = c.Start.Sub(killedAt)
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: nobody polled within 30s of the kill", r+1)
			}
			time.Sleep(20 * time.Millisecond)
		}
		answered()
		failovers = append(failovers, took)
		if took > 15*time.Second {
			t.Errorf("round %d: failover took %v, over 15s", r+1, took.Round(time.Millisecond))
		}
	}
	ask(3)
	answered()
	api.Say(chooser, "a kite after the kills")
	wantBotPhoto(t, api.WaitSentTo(chooser, 2)[1], "sluice-mosaic")
	time.Sleep(time.Second) // a duplicate would come by now
	for u := range asked {
		if got := api.SentTo(u); len(got) != 1 {
			t.Errorf("user %d got %d answers, want 1", u, len(got))
		}
	}
	if c := api.Conflicts(); c != 0 {
		t.Errorf("%d getUpdates answered 409: two gateways polled at once", c)
	}
	slices.Sort(failovers)
	t.Logf("failover over %d kills: min %v, median %v, max %v", len(failovers),
		failovers[0].Round(time.Millisecond), failovers[len(failovers)/2].Round(time.Millisecond), failovers[len(failovers)-1].Round(time.Millisecond))
}

// journalSettled waits until the journal of updates on b holds no update
// in hand.
func journalSettled(t *testing.T, b *backend) {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), b.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM bot_updates WHERE NOT done`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d updates still in hand after 10s", n)
		}
	}
}

// livePoller waits until exactly one of the live gateways has become the
// poller, and returns it. (With kills only, a gateway that became the
// poller stays it until it dies.)
func livePoller(t *testing.T, live []*gatewayProc) *gatewayProc {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var ls []*gatewayProc
		for _, p := range live {
			if p.leads() > 0 {
				ls = append(ls, p)
			}
		}
		switch {
		case len(ls) > 1:
			t.Fatalf("%d live gateways became the poller", len(ls))
		case len(ls) == 1:
			return ls[0]
		case time.Now().After(deadline):
			t.Fatal("no gateway became the poller within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTelegramPausedLeader: the poller is paused (SIGSTOP) past its lease;
// the other gateway takes over; when the old one wakes (SIGCONT) it does
// not poll again, so Telegram never sees two pollers, and every update is
// answered once.
func TestTelegramPausedLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gateway processes")
	}
	b := sharedBackend(t)
	api := telegramtest.NewServer(t, botToken)
	env := map[string]string{"SLUICE_TELEGRAM_TOKEN": botToken, "SLUICE_TELEGRAM_API_URL": api.URL}
	procs := []*gatewayProc{startGateway(t, b, env), startGateway(t, b, env)}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("fake Telegram: %d getUpdates answered 409", api.Conflicts())
		}
	})
	user := int64(8000)
	ask := func(n int) {
		for range n {
			user++
			api.Say(user, "a heron")
		}
	}
	answeredOnce := func(from int64) {
		t.Helper()
		for u := from + 1; u <= user; u++ {
			api.WaitSentTo(u, 1)
		}
	}
	ask(2)
	answeredOnce(8000)
	old := livePoller(t, procs)
	if err := old.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	// A stopped gateway cannot stop on SIGTERM: wake it first should the
	// test end before it does (cleanups run last in, first out).
	t.Cleanup(func() { old.cmd.Process.Signal(syscall.SIGCONT) })
	// kill(2) returns before every thread has stopped: a thread that is
	// not the one picked for the signal runs on until the group stop
	// reaches it, and on a loaded machine it once took the updates below
	// and claimed them before it stopped (they were then answered when it
	// woke, as designed, not by the other gateway). The test is of a pause
	// before the updates come.
	waitStopped(t, old.cmd.Process.Pid)
	stoppedAt := time.Now()
	mark := user
	ask(3)
	answeredOnce(mark) // by the other gateway
	t.Logf("taken over %v after the pause", time.Since(stoppedAt).Round(time.Millisecond))
	// By design within LeaseTTL + LeaseRetry (11 s); the rest is slack for
	// a loaded two-core machine under -race, where a takeover once took
	// over 15 s.
	if d := time.Since(stoppedAt); d > 20*time.Second {
		t.Errorf("took over %v after the pause, over 20s", d)
	}
	if err := old.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // the old poller wakes and finds its lease gone
	mark = user
	ask(3)
	answeredOnce(mark)
	time.Sleep(time.Second)
	for u := int64(8001); u <= user; u++ {
		if got := len(api.SentTo(u)); got != 1 {
			t.Errorf("user %d got %d answers, want 1", u, got)
		}
	}
	if c := api.Conflicts(); c != 0 {
		t.Errorf("%d getUpdates answered 409: the paused poller polled again", c)
	}
	if !strings.Contains(old.out.String(), "lost the poller lease") {
		t.Errorf("the paused gateway did not notice it lost the lease:\n%s", warnings(old.out.String(), 20))
	}
}

// waitStopped waits until every thread of process pid is stopped, as
// /proc shows it; without /proc (not Linux) it waits a second.
func waitStopped(t *testing.T, pid int) {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	if _, err := os.Stat(dir); err != nil {
		time.Sleep(time.Second)
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		running := ""
		tasks, _ := os.ReadDir(dir)
		for _, task := range tasks {
			stat, err := os.ReadFile(dir + "/" + task.Name() + "/stat")
			if err != nil {
				continue // the thread has exited
			}
			// "tid (comm) S ...": the name may hold spaces and parentheses.
			i := strings.LastIndexByte(string(stat), ')')
			if f := strings.Fields(string(stat[i+1:])); len(f) > 0 && f[0] != "T" && f[0] != "t" {
				running = task.Name() + " in state " + f[0]
				break
			}
		}
		if running == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d not stopped 10s after SIGSTOP: thread %s", pid, running)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestTelegramWebhookSpread: three gateways in webhook mode; deliveries
// spread over them, one delivered to all three, each update handled once.
func TestTelegramWebhookSpread(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gateway processes")
	}
	b := sharedBackend(t)
	api := telegramtest.NewServer(t, botToken)
	env := map[string]string{
		"SLUICE_TELEGRAM_TOKEN":          botToken,
		"SLUICE_TELEGRAM_API_URL":        api.URL,
		"SLUICE_TELEGRAM_WEBHOOK_URL":    "https://bot.example.com/telegram/hook",
		"SLUICE_TELEGRAM_WEBHOOK_SECRET": "hook-secret_1",
	}
	var hooks []string
	for range 3 {
		hooks = append(hooks, startGateway(t, b, env).url+"/telegram/hook")
	}
	dup := api.Update(9001, 9001, "a lighthouse")
	for _, h := range hooks {
		if got := api.Deliver(h, "hook-secret_1", dup); got != 200 {
			t.Fatalf("delivery: %d", got)
		}
	}
	for i := range 6 {
		u := int64(9002 + i)
		if got := api.Deliver(hooks[i%3], "hook-secret_1", api.Update(u, u, "a fox")); got != 200 {
			t.Fatalf("delivery: %d", got)
		}
	}
	for u := int64(9001); u <= 9007; u++ {
		api.WaitSentTo(u, 1)
	}
	time.Sleep(time.Second)
	for u := int64(9001); u <= 9007; u++ {
		if got := len(api.SentTo(u)); got != 1 {
			t.Errorf("user %d got %d answers, want 1", u, got)
		}
	}
	if n := len(api.Calls("getUpdates")); n != 0 {
		t.Errorf("%d getUpdates in webhook mode", n)
	}
}
