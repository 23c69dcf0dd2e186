//! `slack` (HTTP, `POST slack`, no key: Slack signs instead): the Approve,
//! Reject and Roll back buttons of Sluice's Slack messages. Slack posts the
//! click here; Sluice checks the signature, finds the Slack user's Sluice
//! identity and roles, acts as that person, and tells them the outcome
//! through the click's `response_url` (a message only they see).
//!
//! The contract, from Slack: "Verifying requests from Slack"
//! (api.slack.com/authentication/verifying-requests-from-slack) and its
//! SDK's `slack_sdk/signature` — `X-Slack-Signature` is `v0=` and the hex
//! HMAC-SHA256, keyed by the app's signing secret, of
//! `v0:{X-Slack-Request-Timestamp}:{raw body}`; a timestamp more than five
//! minutes from now is refused, and the compare is constant-time. "Handling
//! user interaction" (api.slack.com/interactivity/handling): the body is
//! `application/x-www-form-urlencoded` with one `payload` parameter, JSON
//! of type `block_actions` with `user`, `team`, `actions[]` (`action_id`,
//! `value`) and `response_url`; Slack wants a 200 within 3 seconds (Bolt's
//! `BlockAction` type in slackapi/bolt-js names the same fields).

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use super::error::ApiError;
use super::{App, HttpRequest, HttpResponse};
use crate::domain::access::Action;
use crate::domain::ids::{shown, RequestId};
use crate::domain::rollout::{Event, Outcome};
use crate::ports::notify::slack::{ButtonValue, APPROVE, REJECT, ROLL_BACK};
use crate::shell::config::{ChatPerson, SlackInteractivity};

/// Largest click payload accepted (Slack's are a few KiB; the message is echoed in them).
const MAX_SLACK_BODY: usize = 256 * 1024;
/// How long a reply to Slack's `response_url` may take (it runs beside the answer).
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How far Slack's timestamp may be from Sluice's clock.
const MAX_SKEW_SECS: i64 = 5 * 60;

#[derive(Debug, Deserialize)]
struct Click {
    #[serde(rename = "type")]
    kind: String,
    user: SlackUser,
    #[serde(default)]
    team: Option<SlackTeam>,
    actions: Vec<SlackAction>,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(default)]
    trigger_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SlackUser {
    id: String,
    #[serde(default)]
    team_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SlackTeam {
    id: String,
}

#[derive(Debug, Deserialize)]
struct SlackAction {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
}

/// Handles one click.
pub async fn handle(app: &App, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let Some(slack) = app.engine.slack() else {
        return Err(ApiError::new(404, "not_configured", "Slack's buttons are not set up here (SLUICE_SLACK_SIGNING_SECRET)"));
    };
    if req.method != "POST" {
        return Err(ApiError::new(405, "method_not_allowed", "Slack posts clicks"));
    }
    if req.body.len() > MAX_SLACK_BODY {
        return Err(ApiError::new(413, "too_large", format!("a click is at most {MAX_SLACK_BODY} bytes")));
    }
    verify(slack, &req, app.engine.clock.now().timestamp())?;
    let click = click(&req.body)?;
    let reply = act(app, slack, &click).await;
    if let Some(url) = click.response_url.clone() {
        // Slack wants its answer within 3 s: the reply goes on its own, whatever Slack's hook does.
        let (http, loopback, text) = (app.engine.env.http.clone(), app.engine.env.reach.loopback, reply.clone());
        tokio::spawn(async move { tell(&http, loopback, &url, &text).await });
    }
    Ok(HttpResponse::json(200, &json!({"text": reply})))
}

/// Checks Slack's signature over the raw body; every refusal says what, never the secret.
fn verify(slack: &SlackInteractivity, req: &HttpRequest, now: i64) -> Result<(), ApiError> {
    let unsigned = |field: &str, why: &str| ApiError::new(401, "invalid_signature", why.to_string()).field(field);
    let stamp = req.header("x-slack-request-timestamp").ok_or_else(|| unsigned("x-slack-request-timestamp", "no Slack timestamp"))?;
    let at: i64 = stamp.parse().map_err(|_| unsigned("x-slack-request-timestamp", "the Slack timestamp is not a number"))?;
    if (now - at).abs() > MAX_SKEW_SECS {
        return Err(unsigned("x-slack-request-timestamp", "the Slack timestamp is more than 5 minutes from now (a replay?)"));
    }
    let given = req.header("x-slack-signature").ok_or_else(|| unsigned("x-slack-signature", "no Slack signature"))?;
    let expected = signature(&slack.signing_secret.0, stamp, &req.body);
    if !super::alerts::token_matches(&expected, Some(given)) {
        return Err(unsigned("x-slack-signature", "the Slack signature does not match the body"));
    }
    Ok(())
}

/// `v0=` and the hex HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else { return String::new() };
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

/// The form's `payload`, as a click on one of Sluice's buttons.
fn click(body: &[u8]) -> Result<Click, ApiError> {
    let payload = form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| ApiError::invalid_field("payload", "Slack sends the click as a form with one payload parameter"))?;
    let click: Click =
        serde_json::from_str(&payload).map_err(|e| ApiError::invalid_field("payload", format!("is not a Slack click: {e}")))?;
    if click.kind != "block_actions" {
        return Err(ApiError::invalid_field("payload.type", format!("'{}' is not block_actions", shown(&click.kind))));
    }
    Ok(click)
}

/// Acts as the Slack user, and says what happened in words for them.
async fn act(app: &App, slack: &SlackInteractivity, click: &Click) -> String {
    let Some(action) = click.actions.first() else { return "No button was named; nothing was done.".into() };
    let Some(person) = person(slack, click) else {
        return format!(
            "Your Slack account ({}) is not linked to a Sluice identity, so nothing was done. An Admin adds it to SLUICE_SLACK_USERS.",
            shown(&click.user.id)
        );
    };
    let Some(button) = action.value.as_deref().and_then(|v| serde_json::from_str::<ButtonValue>(v).ok()) else {
        return "This button does not name a rollout; nothing was done.".into();
    };
    let (needs, what) = match action.action_id.as_str() {
        APPROVE => (Action::Approve, "approve"),
        REJECT => (Action::Approve, "reject"),
        ROLL_BACK => (Action::Steer, "roll back"),
        other => return format!("'{}' is not one of Sluice's buttons; nothing was done.", shown(other)),
    };
    let allowed = person.roles.iter().any(|r| needs.allowed_by().contains(r));
    if !allowed {
        return format!("{} may not {what} from Slack: that needs the {} role.", person.actor, needs.needs());
    }
    let by = person.actor.clone();
    let request = click.trigger_id.as_deref().and_then(|t| RequestId::parse(&format!("slack-{}", shown(t))).ok());
    let stage = Some(button.stage);
    let event = match action.action_id.as_str() {
        APPROVE => Event::Approved { by, stage, request },
        REJECT => Event::Rejected { by, reason: "rejected from Slack".into(), stage, request },
        _ => Event::AbortRequested { by, reason: "rolled back from Slack".into(), request },
    };
    let id = &button.rollout;
    match app.engine.apply(id, event).await {
        Ok(applied) => match applied.outcome {
            Outcome::Applied | Outcome::Duplicate => {
                format!("Done: {} asked to {what} {id}; it is now {}.", person.actor, applied.rollout.phase)
            }
            Outcome::Refused(refusal) => format!("Not done: {}", refusal.reason),
        },
        Err(e) => format!("Not done: {}", ApiError::from(e).message),
    }
}

/// The Slack user's Sluice identity: by `TEAM/USER`, else by `USER`.
fn person<'a>(slack: &'a SlackInteractivity, click: &Click) -> Option<&'a ChatPerson> {
    let team = click.team.as_ref().map(|t| t.id.as_str()).or(click.user.team_id.as_deref());
    team.and_then(|t| slack.people.get(&format!("{t}/{}", click.user.id))).or_else(|| slack.people.get(&click.user.id))
}

/// Answers the person who clicked, in a message only they see; only to
/// Slack's own hooks (a click's `response_url` comes in a signed body, but
/// a leaked secret must not make Sluice post anywhere).
async fn tell(http: &reqwest::Client, loopback: bool, url: &str, text: &str) {
    let to_slack = url.starts_with("https://hooks.slack.com/") || (loopback && url.starts_with("http://127.0.0.1:"));
    if !to_slack {
        tracing::warn!("a Slack click's response_url is not Slack's; no reply sent");
        return;
    }
    let body = json!({"response_type": "ephemeral", "replace_original": false, "text": text});
    let sent = http.post(url).timeout(REPLY_TIMEOUT).json(&body).send().await;
    if let Err(e) = sent.and_then(|r| r.error_for_status()) {
        tracing::warn!(error = %crate::domain::redact::secrets(&e.to_string()), "the reply to Slack was not delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of Slack's "Verifying requests from Slack" page.
    #[test]
    fn the_signature_is_slacks_own_worked_example() {
        let body = b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
        assert_eq!(
            signature("8f742231b10e8888abcd99yyyzzz85a5", "1531420618", body),
            "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
        );
    }
}
