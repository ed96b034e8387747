package telegram_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice"
)

// TestAuditActor: what the bot changes (the account a first message
// creates, a /link) is done by the Telegram user who sent the message.
func TestAuditActor(t *testing.T) {
	e := newEnv(t, nil)
	e.start()
	ctx := context.Background()
	const user = 900
	wantText(t, e.say(user, "/start", 1), "Hi!")
	own := e.accountOf(user)
	owner := &sluice.Account{Email: "ada@example.com", Plan: "basic"}
	if err := e.accounts.CreateAccount(ctx, owner); err != nil {
		t.Fatal(err)
	}
	wantText(t, e.say(user, "/link "+e.linkCode(owner.ID), 2), "Linked")

	es, err := e.accounts.ListAudit(ctx, sluice.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range es {
		d, _ := json.Marshal(ev.Details)
		got = append(got, fmt.Sprintf("%s %d %s/%s %q %s", ev.Action, ev.AccountID, ev.Actor.Type, ev.Actor.ID, ev.Actor.IP, d))
	}
	want := []string{
		fmt.Sprintf(`telegram.linked %d telegram/900 "" {"from_account_id":%d,"telegram_id":900}`, owner.ID, own.ID),
		fmt.Sprintf(`telegram.unlinked %d telegram/900 "" {"telegram_id":900,"to_account_id":%d}`, own.ID, owner.ID),
		fmt.Sprintf(`account.created %d system/ "" {"email":"ada@example.com","plan":"basic"}`, owner.ID),
		fmt.Sprintf(`account.created %d telegram/900 "" {"plan":"starter","telegram_id":900}`, own.ID),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audit events (-want +got):\n%s", diff)
	}
}
