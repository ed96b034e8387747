package telegram

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-telegram/bot/models"
)

// FuzzGetUpdates: whatever the Bot API answers to getUpdates, the bot does
// not panic, returns each update with its own JSON, and moves its offset
// past each update it leaves out (it does not decode) whose ID it can read,
// so that a bad one is not polled again and again.
func FuzzGetUpdates(f *testing.F) {
	f.Add([]byte(`{"ok":true,"result":[{"update_id":7,"message":{"message_id":1,"date":1,"chat":{"id":5,"type":"private"},"text":"hi"}}]}`))
	f.Add([]byte(`{"ok":true,"result":[{"update_id":8,"message":{"message_id":"x"}},{"update_id":9}]}`))
	f.Add([]byte(`{"ok":false,"error_code":409,"description":"Conflict"}`))
	f.Add([]byte(`{"ok":true,"result":[1,"a",null,{}]}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, body []byte) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write(body)
		}))
		defer srv.Close()
		b := &Bot{Token: "1:x", APIURL: srv.URL, client: srv.Client(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		updates, raws, err := b.getUpdates(context.Background(), 0, 0)
		if err != nil {
			return
		}
		if len(updates) != len(raws) {
			t.Fatalf("%d updates, %d raws", len(updates), len(raws))
		}
		for i, u := range updates {
			var id struct {
				ID int64 `json:"update_id"`
			}
			if err := json.Unmarshal(raws[i], &id); err != nil || id.ID != u.ID {
				t.Fatalf("update %d: raw %q reads as %d, %v", u.ID, raws[i], id.ID, err)
			}
		}
		// Every update left out whose ID can be read is confirmed.
		var ans struct {
			Result []json.RawMessage `json:"result"`
		}
		json.Unmarshal(body, &ans)
		for _, raw := range ans.Result {
			var u models.Update
			var id struct {
				ID int64 `json:"update_id"`
			}
			if json.Unmarshal(raw, &u) != nil && json.Unmarshal(raw, &id) == nil && b.offset <= id.ID {
				t.Fatalf("offset %d after the bad update %d", b.offset, id.ID)
			}
		}
	})
}
