package http_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/sluicehq/sluice"
)

// An operator lists an account's keys and revokes one; the key is refused
// on its next use, and the other keeps working.
func TestAdminKeys(t *testing.T) {
	h := newHarness(t)
	id, key := h.account("vip")
	other := h.key(id)
	wantStatus(t, h.generate(key, 1), 200)

	res := h.do("GET", fmt.Sprintf("/admin/accounts/%d/keys", id), adminToken, "")
	wantStatus(t, res, 200)
	var list struct {
		Keys []struct{ ID, Name, Prefix string } `json:"keys"`
	}
	if err := json.Unmarshal(res.Body, &list); err != nil || len(list.Keys) != 2 {
		t.Fatalf("list: %s (%v)", res.Body, err)
	}
	kid, _, _ := sluice.ParseAPIKey(key)
	if list.Keys[0].ID != kid || list.Keys[0].Prefix != sluice.APIKeyPrefix+kid {
		t.Fatalf("first key %+v, want id %s", list.Keys[0], kid)
	}

	wantStatus(t, h.do("DELETE", fmt.Sprintf("/admin/accounts/%d/keys/%s", id, kid), adminToken, ""), 204)
	wantStatus(t, h.generate(key, 1), 401)
	wantStatus(t, h.generate(other, 1), 200)
	// Again, or another account's key: 404; without the admin token: 401.
	wantStatus(t, h.do("DELETE", fmt.Sprintf("/admin/accounts/%d/keys/%s", id, kid), adminToken, ""), 404)
	id2, _ := h.account("vip")
	okid, _, _ := sluice.ParseAPIKey(other)
	wantStatus(t, h.do("DELETE", fmt.Sprintf("/admin/accounts/%d/keys/%s", id2, okid), adminToken, ""), 404)
	wantStatus(t, h.do("GET", fmt.Sprintf("/admin/accounts/%d/keys", id), "", ""), 401)
}
