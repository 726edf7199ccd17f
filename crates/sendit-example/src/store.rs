//! SendIt's in-memory state: contacts, messages, payments and scheduled jobs.
//!
//! Nothing is persisted; every start begins with the same small seed data set.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// An address-book entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    /// Identifier, `ct_<n>`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// E-mail address.
    pub email: String,
}

impl Contact {
    /// The contact as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({ "id": self.id, "name": self.name, "email": self.email })
    }
}

/// A message that was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Identifier, `msg_<n>`.
    pub id: String,
    /// Recipient address.
    pub to: String,
    /// Message text.
    pub body: String,
    /// When it was sent (RFC 3339, UTC).
    pub sent_at: String,
}

impl Message {
    /// The message as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({ "id": self.id, "to": self.to, "body": self.body, "sent_at": self.sent_at })
    }
}

/// A payment and how much of it was refunded.
#[derive(Debug, Clone, PartialEq)]
pub struct Payment {
    /// Identifier, `pay_<n>`.
    pub id: String,
    /// Amount in major units of `currency`.
    pub amount: f64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Who was paid.
    pub recipient: String,
    /// Why, if the caller said.
    pub reason: Option<String>,
    /// Sum of all refunds so far.
    pub refunded: f64,
    /// When it was made (RFC 3339, UTC).
    pub created_at: String,
}

impl Payment {
    /// `succeeded`, `partially_refunded` or `refunded`.
    pub fn status(&self) -> &'static str {
        if self.refunded <= 0.0 {
            "succeeded"
        } else if self.refunded + 1e-9 < self.amount {
            "partially_refunded"
        } else {
            "refunded"
        }
    }

    /// The payment as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "payment_id": self.id,
            "amount": self.amount,
            "currency": self.currency,
            "recipient": self.recipient,
            "reason": self.reason,
            "refunded_total": self.refunded,
            "status": self.status(),
            "created_at": self.created_at,
        })
    }
}

/// A command scheduled to run later (nothing ever actually runs).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Identifier, `job_<n>`.
    pub id: String,
    /// The command line.
    pub command: String,
    /// When it should run (RFC 3339).
    pub at: String,
}

impl Job {
    /// The job as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({ "job_id": self.id, "command": self.command, "at": self.at, "status": "scheduled" })
    }
}

/// All of SendIt's state.
#[derive(Debug, Default)]
pub struct Store {
    /// The address book, in creation order.
    pub contacts: Vec<Contact>,
    /// Sent messages, oldest first.
    pub messages: Vec<Message>,
    /// Payments, oldest first.
    pub payments: Vec<Payment>,
    /// Scheduled jobs, oldest first.
    pub jobs: Vec<Job>,
    /// The last number handed out in an identifier (shared by all kinds).
    last_id: u64,
}

impl Store {
    /// A store with three contacts and three messages.
    pub fn seeded() -> Self {
        let mut store = Store::default();
        for (name, email) in [
            ("Alice Example", "alice@example.com"),
            ("Bob Builder", "bob@example.com"),
            ("Carol Partner", "carol@partner.org"),
        ] {
            store.add_contact(name, email);
        }
        for (to, body, at) in [
            (
                "alice@example.com",
                "Lunch on Friday? The usual place at noon.",
                "2025-01-06T09:15:00Z",
            ),
            (
                "bob@example.com",
                "Quarterly numbers are attached; revenue is up 12%.",
                "2025-01-07T14:02:00Z",
            ),
            (
                "carol@partner.org",
                "Here is the second draft of the contract.",
                "2025-01-08T16:45:00Z",
            ),
        ] {
            store.add_message_at(to, body, at.to_string());
        }
        store
    }

    /// The next identifier with the given prefix.
    fn next_id(&mut self, prefix: &str) -> String {
        self.last_id += 1;
        format!("{prefix}_{}", self.last_id)
    }

    /// Adds a contact and returns it.
    pub fn add_contact(&mut self, name: &str, email: &str) -> Contact {
        let contact = Contact {
            id: self.next_id("ct"),
            name: name.to_string(),
            email: email.to_string(),
        };
        self.contacts.push(contact.clone());
        contact
    }

    /// Removes a contact; `None` when there is no such id.
    pub fn remove_contact(&mut self, id: &str) -> Option<Contact> {
        let index = self.contacts.iter().position(|c| c.id == id)?;
        Some(self.contacts.remove(index))
    }

    /// Records a message sent now.
    pub fn add_message(&mut self, to: &str, body: &str) -> Message {
        self.add_message_at(to, body, now_rfc3339())
    }

    /// Records a message sent at the given time.
    fn add_message_at(&mut self, to: &str, body: &str, sent_at: String) -> Message {
        let message = Message {
            id: self.next_id("msg"),
            to: to.to_string(),
            body: body.to_string(),
            sent_at,
        };
        self.messages.push(message.clone());
        message
    }

    /// Records a payment made now.
    pub fn add_payment(
        &mut self,
        amount: f64,
        currency: &str,
        recipient: &str,
        reason: Option<&str>,
    ) -> Payment {
        let payment = Payment {
            id: self.next_id("pay"),
            amount,
            currency: currency.to_string(),
            recipient: recipient.to_string(),
            reason: reason.map(str::to_string),
            refunded: 0.0,
            created_at: now_rfc3339(),
        };
        self.payments.push(payment.clone());
        payment
    }

    /// Records a job.
    pub fn add_job(&mut self, command: &str, at: &str) -> Job {
        let job = Job {
            id: self.next_id("job"),
            command: command.to_string(),
            at: at.to_string(),
        };
        self.jobs.push(job.clone());
        job
    }
}

/// The current time as RFC 3339 UTC with second precision.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_rfc3339(secs)
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Converts days since 1970-01-01 to a (year, month, day) date in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_735_689_599), "2024-12-31T23:59:59Z");
    }

    #[test]
    fn seed_data_and_ids() {
        let mut store = Store::seeded();
        assert_eq!(store.contacts.len(), 3);
        assert_eq!(store.messages.len(), 3);
        let c = store.add_contact("Dan", "dan@example.com");
        assert_eq!(c.id, "ct_7");
        assert!(store.remove_contact("ct_7").is_some());
        assert!(store.remove_contact("ct_7").is_none());
    }

    #[test]
    fn payment_status_follows_refunds() {
        let mut store = Store::default();
        let mut p = store.add_payment(10.0, "USD", "bob", None);
        assert_eq!(p.status(), "succeeded");
        p.refunded = 4.0;
        assert_eq!(p.status(), "partially_refunded");
        p.refunded = 10.0;
        assert_eq!(p.status(), "refunded");
    }
}
