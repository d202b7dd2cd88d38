//! The control topics (DESIGN.md, "The control protocol"): building them and reading a stream
//! and thing back out of a received topic. Pure; no I/O.
//!
//! ```text
//! {prefix}/{thing}/streams/{stream}/desired    retained, written by `ctl`
//! {prefix}/{thing}/streams/{stream}/reported   retained, written by the agent
//! {prefix}/{thing}/agent                        retained + last will, written by the agent
//! {prefix}/{thing}/streams/{stream}/uploads          a time range to upload, from `ctl`
//! {prefix}/{thing}/streams/{stream}/live             live on or off, from `ctl`
//! {prefix}/{thing}/streams/{stream}/upload-answers   the agent's answer to each of those
//! {prefix}/{thing}/streams/{stream}/upload-status    retained, written by the agent
//! ```

use crate::edge_config::validate::is_resource_name;

/// Which of a stream's topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Desired,
    Reported,
    Uploads,
    Live,
    UploadAnswers,
    UploadStatus,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Desired,
        Kind::Reported,
        Kind::Uploads,
        Kind::Live,
        Kind::UploadAnswers,
        Kind::UploadStatus,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Kind::Desired => "desired",
            Kind::Reported => "reported",
            Kind::Uploads => "uploads",
            Kind::Live => "live",
            Kind::UploadAnswers => "upload-answers",
            Kind::UploadStatus => "upload-status",
        }
    }
}

/// The topics of one prefix. `thing` is `None` when the agent runs in local mode without a
/// configured thing name: it then listens to every thing under the prefix and takes each
/// stream's thing from the topic its configuration came on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    pub prefix: String,
    pub thing: Option<String>,
}

/// A stream topic taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamTopic {
    pub thing: String,
    pub stream: String,
    pub kind: Kind,
}

/// The thing used for the agent status topic when no thing name is configured.
pub const LOCAL_THING: &str = "local";

impl Topics {
    pub fn new(prefix: impl Into<String>, thing: Option<String>) -> Topics {
        Topics {
            prefix: prefix.into(),
            thing,
        }
    }

    pub fn stream(&self, thing: &str, stream: &str, kind: Kind) -> String {
        format!("{}/{thing}/streams/{stream}/{}", self.prefix, kind.as_str())
    }

    pub fn desired(&self, thing: &str, stream: &str) -> String {
        self.stream(thing, stream, Kind::Desired)
    }

    pub fn reported(&self, thing: &str, stream: &str) -> String {
        self.stream(thing, stream, Kind::Reported)
    }

    /// The filter of every stream's `kind` topic of `thing` (`+` when `None`).
    pub fn filter(&self, thing: Option<&str>, kind: Kind) -> String {
        format!(
            "{}/{}/streams/+/{}",
            self.prefix,
            thing.unwrap_or("+"),
            kind.as_str()
        )
    }

    /// What the agent subscribes to: the `desired` topics of its thing (of every thing in
    /// local mode without a thing name).
    pub fn desired_filter(&self) -> String {
        self.filter(self.thing.as_deref(), Kind::Desired)
    }

    /// The request topics the agent subscribes to besides `desired`: `uploads` and `live`.
    pub fn request_filters(&self) -> [String; 2] {
        [Kind::Uploads, Kind::Live].map(|k| self.filter(self.thing.as_deref(), k))
    }

    /// The agent status topic (also the last will's).
    pub fn agent(&self) -> String {
        format!(
            "{}/{}/agent",
            self.prefix,
            self.thing.as_deref().unwrap_or(LOCAL_THING)
        )
    }

    /// Takes a stream topic of this prefix apart; `None` for anything else (another prefix,
    /// another shape, a thing or stream name outside `[a-zA-Z0-9_.-]+`, or another thing than
    /// this agent's).
    pub fn parse(&self, topic: &str) -> Option<StreamTopic> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [thing, "streams", stream, kind] = parts.as_slice() else {
            return None;
        };
        let kind = Kind::ALL.into_iter().find(|k| k.as_str() == *kind)?;
        if !is_resource_name(thing) || !is_resource_name(stream) {
            return None;
        }
        if self.thing.as_deref().is_some_and(|t| t != *thing) {
            return None;
        }
        Some(StreamTopic {
            thing: (*thing).to_owned(),
            stream: (*stream).to_owned(),
            kind,
        })
    }
}

/// Whether `prefix` can be a topic prefix (no wildcards, no leading or trailing `/`).
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && !prefix.contains(['+', '#', '\0'])
        && !prefix.starts_with('/')
        && !prefix.ends_with('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_topics() {
        let t = Topics::new("kvs-edge", Some("hub-1".into()));
        assert_eq!(
            t.desired("hub-1", "cam"),
            "kvs-edge/hub-1/streams/cam/desired"
        );
        assert_eq!(
            t.reported("hub-1", "cam"),
            "kvs-edge/hub-1/streams/cam/reported"
        );
        assert_eq!(t.desired_filter(), "kvs-edge/hub-1/streams/+/desired");
        assert_eq!(t.agent(), "kvs-edge/hub-1/agent");
        let local = Topics::new("a/b", None);
        assert_eq!(local.desired_filter(), "a/b/+/streams/+/desired");
        assert_eq!(local.agent(), "a/b/local/agent");
        assert_eq!(
            local.filter(Some("x"), Kind::Reported),
            "a/b/x/streams/+/reported"
        );
    }

    #[test]
    fn parses_topics() {
        let t = Topics::new("kvs-edge", None);
        assert_eq!(
            t.parse("kvs-edge/hub-1/streams/cam.1/desired"),
            Some(StreamTopic {
                thing: "hub-1".into(),
                stream: "cam.1".into(),
                kind: Kind::Desired
            })
        );
        assert_eq!(
            t.parse("kvs-edge/hub-1/streams/cam/reported")
                .map(|s| s.kind),
            Some(Kind::Reported)
        );
        for bad in [
            "",
            "kvs-edge",
            "kvs-edge/",
            "kvs-edgeX/h/streams/c/desired",
            "other/h/streams/c/desired",
            "kvs-edge/h/streams/c/desired/extra",
            "kvs-edge/h/stream/c/desired",
            "kvs-edge/h/streams/c/wanted",
            "kvs-edge/h/streams//desired",
            "kvs-edge//streams/c/desired",
            "kvs-edge/h h/streams/c/desired",
            "kvs-edge/h/streams/c d/desired",
            "kvs-edge/h/agent",
        ] {
            assert_eq!(t.parse(bad), None, "{bad:?}");
        }
        let mine = Topics::new("kvs-edge", Some("hub-1".into()));
        assert!(mine.parse("kvs-edge/hub-2/streams/c/desired").is_none());
        assert!(mine.parse("kvs-edge/hub-1/streams/c/desired").is_some());
        let nested = Topics::new("org/site", Some("h".into()));
        assert!(nested.parse("org/site/h/streams/c/desired").is_some());
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix("kvs-edge"));
        assert!(valid_prefix("a/b"));
        for bad in ["", "/a", "a/", "a/+", "#", "a\0"] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
    }
}
