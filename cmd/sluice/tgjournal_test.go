package main

// The Telegram bot's journal of updates across a crash (CONTRACT.md §7
// "Many instances"; telegram/journal.go): gateway processes killed while a
// prompt is generated, whose update another process (or the same one,
// restarted) answers on the unit already charged.

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/telegram/telegramtest"
)

// TestTelegramCrash: gateway A, polling on Redis and PostgreSQL, receives a
// prompt, charges it and is killed (SIGKILL) while the image is generated.
// Gateway B, running beside it, becomes the poller, claims the update once
// A's lease on it has run out and answers it: one photo, one unit charged.
func TestTelegramCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gateway processes")
	}
	b := sharedBackend(t)
	up := newFakeUpstream(t)
	api := telegramtest.NewServer(t, botToken)
	// Counters flushed only every hour: a charge survives a kill only if
	// the bot synced them before recording it on the update.
	env := map[string]string{"SLUICE_TELEGRAM_TOKEN": botToken, "SLUICE_TELEGRAM_API_URL": api.URL, "SLUICE_UPSTREAM_URL": up.srv.URL,
		"SLUICE_QUOTA_FLUSH_INTERVAL": "1h"}
	pa := startGateway(t, b, env)
	livePoller(t, []*gatewayProc{pa})
	pb := startGateway(t, b, env)

	conn, err := pgx.Connect(context.Background(), b.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	testTelegramCrash(t, api, up, pa, func() (int64, error) {
		var charged int64
		err := conn.QueryRow(context.Background(), `SELECT coalesce(sum(charged), 0) FROM bot_updates WHERE NOT done`).Scan(&charged)
		return charged, err
	}, nil)
	if n := pb.leads(); n != 1 {
		t.Errorf("gateway B became the poller %d times, want 1", n)
	}
}

// TestTelegramCrashEmbedded: the same for one gateway on the embedded
// stores, killed and started again on its data directory. The journal
// records the charge only once the bot synced the account's counters to
// disk (they flush only every hour here): the restarted gateway serves the
// prompt on that unit.
func TestTelegramCrashEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gateway processes")
	}
	up, api, env, data := embeddedBot(t)
	p := startProcess(t, env, data)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(data, "sluice.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	testTelegramCrash(t, api, up, p, func() (int64, error) {
		var charged int64
		err := db.QueryRow(`SELECT coalesce(sum(charged), 0) FROM bot_updates WHERE done = 0`).Scan(&charged)
		return charged, err
	}, func() { startProcess(t, env, data) })
}

// embeddedBot returns a fake upstream and Bot API, the environment of a
// gateway on the embedded stores that uses both, and its data directory.
func embeddedBot(t *testing.T) (*fakeUpstream, *telegramtest.Server, map[string]string, string) {
	up := newFakeUpstream(t)
	api := telegramtest.NewServer(t, botToken)
	// Counters flushed only every hour: a charge survives a kill only if
	// the bot synced them before recording it on the update.
	env := map[string]string{"SLUICE_TELEGRAM_TOKEN": botToken, "SLUICE_TELEGRAM_API_URL": api.URL, "SLUICE_UPSTREAM_URL": up.srv.URL,
		"SLUICE_QUOTA_FLUSH_INTERVAL": "1h"}
	return up, api, env, t.TempDir()
}

// testTelegramCrash sends a prompt that the gateway victim takes to the
// upstream, waits until charged reports its charge in the journal, kills
// the victim, calls restart if not nil, and checks that the prompt is
// answered with one photo, on one unit.
func testTelegramCrash(t *testing.T, api *telegramtest.Server, up *fakeUpstream, victim *gatewayProc, charged func() (int64, error), restart func()) {
	testTelegramStop(t, api, up, func() {
		entered := time.Now()
		waitCharged(t, 20*time.Second, charged)
		t.Logf("the charge was recorded %v after the generation began", time.Since(entered).Round(time.Millisecond))
		victim.kill(t)
	}, restart)
}

// testTelegramStop sends a prompt, stops its gateway with stop once the
// prompt reached the upstream, calls restart if not nil, and checks that
// the prompt is answered with one photo, on one unit.
func testTelegramStop(t *testing.T, api *telegramtest.Server, up *fakeUpstream, stop, restart func()) {
	const user = 8100
	open := sync.OnceFunc(up.close())
	defer open()
	api.Say(user, "a lighthouse")
	select {
	case <-up.in:
	case <-time.After(30 * time.Second):
		t.Fatal("the prompt never reached the upstream")
	}
	stop()
	stopped := time.Now()
	open()
	if restart != nil {
		restart()
	}

	photo := api.WaitSentTo(user, 1)[0]
	t.Logf("answered %v after the stop", time.Since(stopped).Round(time.Millisecond))
	// Starter: 5 an hour; the caption's figures are after one unit.
	wantBotPhoto(t, photo, "4 of 5 left this hour")
	api.Say(user, "/usage")
	usage := api.WaitSentTo(user, 2)[1]
	if !strings.Contains(usage.Text, "1 of 5") {
		t.Errorf("/usage after the take-over: %q, want 1 of 5 used", usage.Text)
	}
	if n := up.calls.Load(); n != 2 {
		t.Errorf("the upstream was called %d times, want 2 (the stopped gateway's and the take-over's)", n)
	}
	time.Sleep(time.Second) // a second answer would come by now
	if got := api.SentTo(user); len(got) != 2 {
		t.Errorf("%d messages, want 2 (the photo and /usage)", len(got))
	}
}

// TestTelegramRestartEmbedded: a gateway on the embedded stores stopped
// cleanly (SIGTERM, as a deploy does) while it generates a prompt hands the
// prompt back with its charge; started again on its data, it answers it on
// that charge, without a word to the user about the restart.
func TestTelegramRestartEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("starts gateway processes")
	}
	up, api, env, data := embeddedBot(t)
	p := startProcess(t, env, data)
	testTelegramStop(t, api, up, func() { p.stop(t) }, func() { startProcess(t, env, data) })
}
