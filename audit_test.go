package sluice_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sluicehq/sluice"
)

func TestNewAuditEvent(t *testing.T) {
	bg := context.Background()
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		account int64
		want    sluice.Actor
	}{
		{"no actor: the system", bg, 7, sluice.Actor{Type: sluice.ActorSystem}},
		{"admin", sluice.WithActor(bg, sluice.Actor{Type: sluice.ActorAdmin, IP: "192.0.2.1"}), 7,
			sluice.Actor{Type: sluice.ActorAdmin, IP: "192.0.2.1"}},
		{"user without an ID: the account's", sluice.WithActor(bg, sluice.Actor{Type: sluice.ActorUser, IP: "192.0.2.1"}), 7,
			sluice.Actor{Type: sluice.ActorUser, ID: "7", IP: "192.0.2.1"}},
		{"user with an ID", sluice.WithActor(bg, sluice.Actor{Type: sluice.ActorUser, ID: "3"}), 7,
			sluice.Actor{Type: sluice.ActorUser, ID: "3"}},
		{"user without an ID, no account", sluice.WithActor(bg, sluice.Actor{Type: sluice.ActorUser}), 0,
			sluice.Actor{Type: sluice.ActorUser}},
		{"telegram", sluice.WithActor(bg, sluice.Actor{Type: sluice.ActorTelegram, ID: "501"}), 7,
			sluice.Actor{Type: sluice.ActorTelegram, ID: "501"}},
		{"empty type: the system", sluice.WithActor(bg, sluice.Actor{IP: "192.0.2.1"}), 7, sluice.Actor{Type: sluice.ActorSystem}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := sluice.NewAuditEvent(tc.ctx, sluice.AuditPlanChanged, tc.account, map[string]any{"from": "a"})
			want := &sluice.AuditEvent{Actor: tc.want, Action: sluice.AuditPlanChanged, AccountID: tc.account,
				Details: map[string]any{"from": "a"}}
			if diff := cmp.Diff(want, e); diff != "" {
				t.Errorf("NewAuditEvent mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAuditLimits(t *testing.T) {
	for _, tc := range []struct {
		o    *sluice.LimitOverride
		want map[string]any
	}{
		{nil, nil},
		{&sluice.LimitOverride{Hour: 5, Day: 50}, map[string]any{"hour": int64(5), "day": int64(50)}},
		{&sluice.LimitOverride{Hour: sluice.Unlimited, Day: 0}, map[string]any{"hour": nil, "day": int64(0)}},
		{&sluice.LimitOverride{Hour: -9, Day: sluice.Unlimited}, map[string]any{"hour": nil, "day": nil}},
	} {
		if diff := cmp.Diff(tc.want, sluice.AuditLimits(tc.o)); diff != "" {
			t.Errorf("AuditLimits(%+v) mismatch (-want +got):\n%s", tc.o, diff)
		}
	}
}

func TestAuditFilterEffectiveLimit(t *testing.T) {
	for _, tc := range []struct{ limit, want int }{
		{0, sluice.DefaultAuditLimit}, {-3, sluice.DefaultAuditLimit}, {1, 1}, {77, 77},
		{sluice.MaxAuditLimit, sluice.MaxAuditLimit}, {sluice.MaxAuditLimit + 1, sluice.MaxAuditLimit},
	} {
		if got := (sluice.AuditFilter{Limit: tc.limit}).EffectiveLimit(); got != tc.want {
			t.Errorf("EffectiveLimit(%d) = %d, want %d", tc.limit, got, tc.want)
		}
	}
}
