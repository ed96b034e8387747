// Package telegramtest is a fake Telegram Bot API for tests: an httptest
// server that speaks the Bot API's wire format (POST /bot<token>/<method>
// with form or multipart parameters, answers {"ok":true,"result":…} or
// {"ok":false,"error_code":…,"description":…,"parameters":{"retry_after":…}})
// for the methods the bot uses: getMe, getUpdates (long polling, with
// offsets and timeouts), setWebhook, deleteWebhook, setMyCommands,
// sendMessage and sendPhoto (with inline keyboards) and
// answerCallbackQuery. It records what the bot sends, can answer sends with
// 429, and delivers updates (messages and callback queries) by long polling
// or to a webhook. As Telegram does, it answers 409 to a getUpdates that
// comes while another is held, and counts these conflicts.
package telegramtest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// maxHold bounds how long getUpdates waits for an update, whatever timeout
// the client asks for.
const maxHold = 5 * time.Second

// conflictGrace is how long a getUpdates waits for one held before it to
// end (its client gone) before the fake answers 409.
const conflictGrace = 250 * time.Millisecond

// Sent is a message the bot sent.
type Sent struct {
	Method  string // "sendMessage" or "sendPhoto"
	ChatID  int64
	Text    string // the text, or the photo's caption
	Photo   []byte // the uploaded photo of a sendPhoto
	ReplyTo int    // reply_parameters.message_id; 0: none
	// ReplyMarkup is the reply_markup JSON (an inline keyboard); "" if
	// none.
	ReplyMarkup string
	At          time.Time
}

// Button is a button of an inline keyboard.
type Button struct {
	Text         string `json:"text"`
	CallbackData string `json:"callback_data,omitempty"`
	URL          string `json:"url,omitempty"`
}

// Buttons returns the buttons of the message's inline keyboard, row by
// row; nil without one.
func (m Sent) Buttons() [][]Button {
	if m.ReplyMarkup == "" {
		return nil
	}
	var k struct {
		InlineKeyboard [][]Button `json:"inline_keyboard"`
	}
	if err := json.Unmarshal([]byte(m.ReplyMarkup), &k); err != nil {
		return nil
	}
	return k.InlineKeyboard
}

// Answer is an answerCallbackQuery call.
type Answer struct {
	CallbackQueryID string
	Text            string
}

// Call is a call of a Bot API method.
type Call struct {
	Method string
	Start  time.Time // when the call came
	At     time.Time // when it was answered
	Status int       // the error_code answered, 200 when ok
}

// Server is the fake Bot API. Its methods are safe for concurrent use.
type Server struct {
	URL   string // base URL, as bot.WithServerURL takes it
	Token string

	t   testing.TB
	srv *httptest.Server

	mu            sync.Mutex
	changed       chan struct{} // closed and replaced on every change
	updates       []json.RawMessage
	updateIDs     []int64
	nextUpdate    int64
	nextMessage   int
	sent          []Sent
	calls         []Call
	webhookURL    string
	webhookSecret string
	tooMany       []int // retry_after of the next sends to answer with 429
	polling       int   // getUpdates calls being held
	conflicts     int   // getUpdates calls answered 409
	commands      string
	answers       []Answer
	nextCallback  int
}

// NewServer starts a fake Bot API for the token; it stops with the test.
func NewServer(t testing.TB, token string) *Server {
	s := &Server{Token: token, t: t, changed: make(chan struct{}), nextUpdate: 100, nextMessage: 1000}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// Update returns the JSON of an update carrying a text message from the
// user in the chat (a private chat when chat equals user), as Telegram
// sends it, with a bot_command entity when the text starts with "/". It
// takes the next update and message ids.
func (s *Server) Update(user, chat int64, text string) []byte {
	s.mu.Lock()
	s.nextUpdate++
	s.nextMessage++
	uid, mid := s.nextUpdate, s.nextMessage
	s.mu.Unlock()
	from := map[string]any{"id": user, "is_bot": false, "first_name": "User" + strconv.FormatInt(user, 10), "language_code": "en"}
	c := map[string]any{"id": chat, "type": "private", "first_name": from["first_name"]}
	if chat != user {
		c = map[string]any{"id": chat, "type": "group", "title": "Group " + strconv.FormatInt(chat, 10)}
	}
	msg := map[string]any{"message_id": mid, "from": from, "chat": c, "date": time.Now().Unix(), "text": text}
	if strings.HasPrefix(text, "/") {
		n := strings.IndexAny(text, " \n")
		if n < 0 {
			n = len(text)
		}
		msg["entities"] = []any{map[string]any{"type": "bot_command", "offset": 0, "length": len([]rune(text[:n]))}}
	}
	b, err := json.Marshal(map[string]any{"update_id": uid, "message": msg})
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

// Push queues an update for getUpdates.
func (s *Server) Push(update []byte) {
	var u struct {
		ID int64 `json:"update_id"`
	}
	if err := json.Unmarshal(update, &u); err != nil {
		s.t.Fatal(err)
	}
	s.mu.Lock()
	s.updates = append(s.updates, update)
	s.updateIDs = append(s.updateIDs, u.ID)
	s.changedLocked()
	s.mu.Unlock()
}

// Say queues a text message from the user in their private chat for
// getUpdates.
func (s *Server) Say(user int64, text string) {
	s.Push(s.Update(user, user, text))
}

// Deliver posts the update to a webhook as Telegram does, with the secret
// token header if secret is not empty, and returns the status.
func (s *Server) Deliver(url, secret string, update []byte) int {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(update))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if secret != "" {
		req.Header.Set("X-Telegram-Bot-Api-Secret-Token", secret)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TooManyRequests makes the next len(retryAfter) sends fail with 429 and
// parameters.retry_after, one value each.
func (s *Server) TooManyRequests(retryAfter ...int) {
	s.mu.Lock()
	s.tooMany = append(s.tooMany, retryAfter...)
	s.mu.Unlock()
}

// Sent returns the messages sent so far, in the order they arrived.
func (s *Server) Sent() []Sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sent(nil), s.sent...)
}

// SentTo returns the messages sent to the chat so far.
func (s *Server) SentTo(chat int64) []Sent {
	var out []Sent
	for _, m := range s.Sent() {
		if m.ChatID == chat {
			out = append(out, m)
		}
	}
	return out
}

// Calls returns the calls of a method so far.
func (s *Server) Calls(method string) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Call
	for _, c := range s.calls {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

// Webhook returns the webhook URL and secret token set by setWebhook.
func (s *Server) Webhook() (url, secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.webhookURL, s.webhookSecret
}

// WaitSentTo waits until the chat has received n messages and returns
// them; it fails the test after 30 seconds (a bound for a loaded machine
// under -race: a test that times an answer checks the time itself).
func (s *Server) WaitSentTo(chat int64, n int) []Sent {
	s.t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		if got := s.SentTo(chat); len(got) >= n {
			return got
		}
		select {
		case <-ch:
		case <-deadline:
			got := s.SentTo(chat)
			var texts []string
			for _, m := range got {
				texts = append(texts, m.Text)
			}
			s.t.Fatalf("chat %d received %d messages, want %d: %q", chat, len(got), n, texts)
			return nil
		}
	}
}

// Conflicts returns the number of getUpdates calls answered 409 because
// another was being held: two instances polling at once.
func (s *Server) Conflicts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conflicts
}

// Commands returns the commands JSON of the last setMyCommands.
func (s *Server) Commands() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.commands
}

// Answers returns the answerCallbackQuery calls so far.
func (s *Server) Answers() []Answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Answer(nil), s.answers...)
}

// Callback returns the JSON of an update carrying a callback query: the
// user pressed the button with data under the bot's message msg in their
// private chat. It takes the next update id; the query's id is
// "cb<n>".
func (s *Server) Callback(user int64, msg Sent, messageID int, data string) []byte {
	s.mu.Lock()
	s.nextUpdate++
	s.nextCallback++
	uid, cid := s.nextUpdate, s.nextCallback
	s.mu.Unlock()
	from := map[string]any{"id": user, "is_bot": false, "first_name": "User" + strconv.FormatInt(user, 10)}
	m := map[string]any{"message_id": messageID, "date": time.Now().Unix(), "text": msg.Text,
		"chat": map[string]any{"id": msg.ChatID, "type": "private"}, "from": map[string]any{"id": 1, "is_bot": true, "first_name": "Sluice"}}
	b, err := json.Marshal(map[string]any{"update_id": uid, "callback_query": map[string]any{
		"id": "cb" + strconv.Itoa(cid), "from": from, "message": m, "chat_instance": "ci", "data": data}})
	if err != nil {
		s.t.Fatal(err)
	}
	return b
}

func (s *Server) changedLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

type answer struct {
	OK          bool   `json:"ok"`
	Result      any    `json:"result,omitempty"`
	ErrorCode   int    `json:"error_code,omitempty"`
	Description string `json:"description,omitempty"`
	Parameters  *struct {
		RetryAfter int `json:"retry_after"`
	} `json:"parameters,omitempty"`
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	method, ok := strings.CutPrefix(r.URL.Path, "/bot"+s.Token+"/")
	if !ok || r.Method != http.MethodPost && r.Method != http.MethodGet {
		s.write(w, method, answer{ErrorCode: 401, Description: "Unauthorized"})
		return
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/form-data") {
		// A method without parameters (getMe) comes as an empty
		// multipart body, which Telegram takes as no parameters.
		if err := r.ParseMultipartForm(32 << 20); err != nil && !errors.Is(err, io.EOF) {
			s.write(w, method, answer{ErrorCode: 400, Description: "Bad Request: " + err.Error()})
			return
		}
	} else if err := r.ParseForm(); err != nil {
		s.write(w, method, answer{ErrorCode: 400, Description: "Bad Request: " + err.Error()})
		return
	}
	switch method {
	case "getMe":
		s.write(w, method, answer{OK: true, Result: map[string]any{"id": 1, "is_bot": true, "first_name": "Sluice", "username": "sluice_bot"}})
	case "getUpdates":
		s.getUpdates(w, r)
	case "setMyCommands":
		s.mu.Lock()
		s.commands = r.FormValue("commands")
		s.mu.Unlock()
		s.write(w, method, answer{OK: true, Result: true})
	case "answerCallbackQuery":
		s.mu.Lock()
		s.answers = append(s.answers, Answer{CallbackQueryID: r.FormValue("callback_query_id"), Text: r.FormValue("text")})
		s.changedLocked()
		s.mu.Unlock()
		s.write(w, method, answer{OK: true, Result: true})
	case "setWebhook":
		s.mu.Lock()
		s.webhookURL, s.webhookSecret = r.FormValue("url"), r.FormValue("secret_token")
		s.mu.Unlock()
		s.write(w, method, answer{OK: true, Result: true, Description: "Webhook was set"})
	case "deleteWebhook":
		s.mu.Lock()
		s.webhookURL, s.webhookSecret = "", ""
		s.mu.Unlock()
		s.write(w, method, answer{OK: true, Result: true, Description: "Webhook was deleted"})
	case "sendMessage", "sendPhoto":
		s.send(w, r, method)
	default:
		s.write(w, method, answer{ErrorCode: 404, Description: "Not Found"})
	}
}

func (s *Server) getUpdates(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	// Telegram lets one getUpdates run at a time per bot. A call whose
	// client has just hung up may take the server a moment to notice: a
	// new call waits up to conflictGrace for it before it is a conflict.
	s.mu.Lock()
	for grace := time.Now().Add(conflictGrace); s.polling > 0 && time.Now().Before(grace); {
		s.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
		s.mu.Lock()
	}
	if s.polling > 0 {
		s.conflicts++
		s.mu.Unlock()
		s.write(w, "getUpdates", answer{ErrorCode: 409, Description: "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"})
		return
	}
	s.polling++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.polling--
		s.mu.Unlock()
	}()
	offset, _ := strconv.ParseInt(r.FormValue("offset"), 10, 64)
	timeout, _ := strconv.Atoi(r.FormValue("timeout"))
	hold := min(time.Duration(timeout)*time.Second, maxHold)
	deadline := time.NewTimer(hold)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		// Updates below the offset are confirmed: forget them.
		for len(s.updateIDs) > 0 && s.updateIDs[0] < offset {
			s.updates, s.updateIDs = s.updates[1:], s.updateIDs[1:]
		}
		out := append([]json.RawMessage{}, s.updates...)
		ch := s.changed
		s.mu.Unlock()
		if len(out) > 0 {
			s.writeStart(w, "getUpdates", answer{OK: true, Result: out}, start)
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			s.writeStart(w, "getUpdates", answer{OK: true, Result: []any{}}, start)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (s *Server) send(w http.ResponseWriter, r *http.Request, method string) {
	chat, err := strconv.ParseInt(r.FormValue("chat_id"), 10, 64)
	if err != nil {
		s.write(w, method, answer{ErrorCode: 400, Description: "Bad Request: chat not found"})
		return
	}
	m := Sent{Method: method, ChatID: chat, At: time.Now(), ReplyMarkup: r.FormValue("reply_markup")}
	if rp := r.FormValue("reply_parameters"); rp != "" {
		var p struct {
			MessageID int `json:"message_id"`
		}
		if err := json.Unmarshal([]byte(rp), &p); err != nil {
			s.write(w, method, answer{ErrorCode: 400, Description: "Bad Request: can't parse reply parameters JSON object"})
			return
		}
		m.ReplyTo = p.MessageID
	}
	result := map[string]any{"date": time.Now().Unix(), "chat": map[string]any{"id": chat, "type": "private"}}
	if method == "sendPhoto" {
		f, _, err := r.FormFile("photo")
		if err != nil {
			s.write(w, method, answer{ErrorCode: 400, Description: "Bad Request: there is no photo in the request"})
			return
		}
		m.Photo, _ = io.ReadAll(f)
		f.Close()
		m.Text = r.FormValue("caption")
		result["photo"] = []any{map[string]any{"file_id": "p", "file_unique_id": "p", "width": 512, "height": 512}}
		if m.Text != "" {
			result["caption"] = m.Text
		}
	} else {
		m.Text = r.FormValue("text")
		if m.Text == "" {
			s.write(w, method, answer{ErrorCode: 400, Description: "Bad Request: message text is empty"})
			return
		}
		result["text"] = m.Text
	}

	s.mu.Lock()
	if len(s.tooMany) > 0 {
		ra := s.tooMany[0]
		s.tooMany = s.tooMany[1:]
		s.mu.Unlock()
		a := answer{ErrorCode: 429, Description: fmt.Sprintf("Too Many Requests: retry after %d", ra)}
		a.Parameters = &struct {
			RetryAfter int `json:"retry_after"`
		}{ra}
		s.write(w, method, a)
		return
	}
	s.nextMessage++
	result["message_id"] = s.nextMessage
	s.sent = append(s.sent, m)
	s.changedLocked()
	s.mu.Unlock()
	s.write(w, method, answer{OK: true, Result: result})
}

func (s *Server) write(w http.ResponseWriter, method string, a answer) {
	s.writeStart(w, method, a, time.Now())
}

func (s *Server) writeStart(w http.ResponseWriter, method string, a answer, start time.Time) {
	status := http.StatusOK
	if !a.OK {
		status = a.ErrorCode
	}
	s.mu.Lock()
	s.calls = append(s.calls, Call{Method: method, Start: start, At: time.Now(), Status: status})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(a)
}
