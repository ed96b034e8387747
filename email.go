package sluice

// Email is a plain-text message to one recipient, such as a password-reset
// mail.
type Email struct {
	To      string // a bare address, like name@example.com
	Subject string
	Text    string // the body; lines end in "\n"
}

// Mailer sends email without making its caller wait: Send hands the message
// to a queue and returns, and delivery (with its retries and failures)
// happens in the background. An error means the message was not accepted
// (the queue is full, or the mailer is closed) and will never be sent; the
// mailer has logged it. Implementations are safe for concurrent use.
type Mailer interface {
	Send(m *Email) error
}
