package telegram

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	tgbot "github.com/go-telegram/bot"
	"github.com/go-telegram/bot/models"

	"github.com/sluicehq/sluice"
)

// commands are the bot's commands as Telegram's menu shows them
// (setMyCommands at Start).
var commands = []models.BotCommand{
	{Command: "usage", Description: "What is left of your quota"},
	{Command: "models", Description: "Choose the model for your prompts"},
	{Command: "plan", Description: "Your plan and the others"},
	{Command: "link", Description: "Use your sluice account here: /link CODE"},
	{Command: "help", Description: "What I do, and the commands"},
}

// Username is the bot's username, without "@", as Start learnt it from
// getMe; "" before Start or if getMe failed. It is safe for concurrent use.
func (b *Bot) Username() string {
	if p := b.username.Load(); p != nil {
		return *p
	}
	return ""
}

// setCommands learns the bot's username and registers the command menu.
// A failure only loses the menu or the name (the console's t.me link): it
// is logged.
func (b *Bot) setCommands(ctx context.Context) {
	if me, err := b.api.GetMe(ctx); err != nil {
		b.logger().Warn("telegram: getMe", slog.String("error", err.Error()))
	} else if me.Username != "" {
		b.username.Store(&me.Username)
	}
	if _, err := b.api.SetMyCommands(ctx, &tgbot.SetMyCommandsParams{Commands: commands}); err != nil {
		b.logger().Warn("telegram: set the commands menu", slog.String("error", err.Error()))
	}
}

// modelPrefix starts the callback data of a button of the /models
// keyboard: "model:<id>".
const modelPrefix = "model:"

// modelsKeyboard is a button per model the plan may use, the chosen one
// ticked; nil if there is none.
func modelsKeyboard(ms []sluice.Model, p *sluice.Plan, chosen string) *models.InlineKeyboardMarkup {
	var rows [][]models.InlineKeyboardButton
	for i := range ms {
		m := &ms[i]
		if !p.AllowsModel(m) {
			continue
		}
		text := m.ID
		if m.ID == chosen {
			text = "✓ " + text
		}
		rows = append(rows, []models.InlineKeyboardButton{{Text: text, CallbackData: modelPrefix + m.ID}})
	}
	if rows == nil {
		return nil
	}
	return &models.InlineKeyboardMarkup{InlineKeyboard: rows}
}

// upgradeKeyboard is the "Upgrade" button under the over-quota reply; nil
// without an UpgradeURL.
func (b *Bot) upgradeKeyboard() *models.InlineKeyboardMarkup {
	if b.UpgradeURL == "" {
		return nil
	}
	return &models.InlineKeyboardMarkup{InlineKeyboard: [][]models.InlineKeyboardButton{{{Text: "Upgrade", URL: b.UpgradeURL}}}}
}

// replyWith queues a text answer to m with an inline keyboard.
func (b *Bot) replyWith(m *models.Message, text string, k *models.InlineKeyboardMarkup) {
	if b.out.enqueue(&outMsg{chatID: m.Chat.ID, replyTo: m.ID, text: text, keyboard: k}) == errFull {
		b.notice(m, outboxFullText)
	}
}

// callback handles a button pressed under one of the bot's messages: a
// model of the /models keyboard. Telegram shows a spinner on the button
// until answerCallbackQuery, whose text it shows briefly; the choice is
// also confirmed in the chat.
func (b *Bot) callback(ctx context.Context, q *models.CallbackQuery) {
	ctx = sluice.WithActor(ctx, sluice.Actor{Type: sluice.ActorTelegram, ID: strconv.FormatInt(q.From.ID, 10)})
	m := q.Message.Message
	answer := func(text string) {
		if _, err := b.api.AnswerCallbackQuery(ctx, &tgbot.AnswerCallbackQueryParams{CallbackQueryID: q.ID, Text: text}); err != nil {
			b.logger().Warn("telegram: answer a callback query", slog.String("error", err.Error()))
		}
	}
	id, ok := strings.CutPrefix(q.Data, modelPrefix)
	if !ok || q.From.IsBot {
		answer("")
		return
	}
	a, err := b.account(ctx, q.From.ID)
	if err != nil {
		answer("")
		b.fail(ctx, m, "find or create account", err)
		return
	}
	p := b.plans[a.Plan]
	md := b.models[id]
	switch {
	case p == nil || md == nil:
		answer("That model is gone. /models lists them.")
	case !p.AllowsModel(md):
		answer(fmt.Sprintf("The %s plan can't use %s.", p.Name, md.ID))
	default:
		if err := b.Accounts.SetTelegramModel(ctx, a.ID, md.ID); err != nil {
			answer("")
			b.fail(ctx, m, "set model", err)
			return
		}
		answer("Now using " + md.ID)
		b.out.enqueue(&outMsg{chatID: m.Chat.ID, text: "Done: your prompts now use " + md.ID + "."})
	}
}

// usageBar draws used of limit as 10 cells: "▰▰▱▱▱▱▱▱▱▱ 1/5".
func usageBar(used int64, limit sluice.Limit) string {
	const cells = 10
	n := 0
	if limit > 0 {
		n = int(min((used*cells+int64(limit)-1)/int64(limit), cells))
	}
	return strings.Repeat("▰", n) + strings.Repeat("▱", cells-n) + fmt.Sprintf(" %d/%d", used, limit)
}
