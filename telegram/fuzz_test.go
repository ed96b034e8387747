package telegram_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/sluicehq/sluice/telegram"
)

// FuzzWebhook: any body delivered with the right secret is answered 200 or
// 400, and the bot survives whatever it queued (messages and callback
// queries of any shape).
func FuzzWebhook(f *testing.F) {
	f.Add([]byte(`{"update_id":1,"message":{"message_id":1,"date":1,"chat":{"id":5,"type":"private"},"from":{"id":5,"is_bot":false,"first_name":"a"},"text":"/models"}}`))
	f.Add([]byte(`{"update_id":2,"callback_query":{"id":"c","from":{"id":5,"is_bot":false,"first_name":"a"},"message":{"message_id":1,"date":1,"chat":{"id":5,"type":"private"}},"data":"model:sluice-mosaic"}}`))
	f.Add([]byte(`{"update_id":3,"callback_query":{"id":"c","from":{"id":5},"message":{"message_id":1,"date":0,"chat":{"id":5}},"data":"model:"}}`))
	f.Add([]byte(`{"update_id":4,"callback_query":{"id":"c","data":"x"}}`))
	f.Add([]byte(`{"update_id":5,"message":{"text":"/model"}}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e := newEnv(t, func(b *telegram.Bot) {
			b.WebhookURL = "https://bot.example.com/telegram"
			b.WebhookSecret = "s3cret_token"
		})
		e.start()
		h := e.bot.WebhookHandler()
		req := httptest.NewRequest(http.MethodPost, "/telegram", bytes.NewReader(body))
		req.Header.Set(telegram.SecretHeader, "s3cret_token")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 && rec.Code != 400 {
			t.Fatalf("status %d", rec.Code)
		}
	})
}
