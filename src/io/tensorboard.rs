//! TensorBoard event files (`events.out.tfevents.*`), as `torch.utils.tensorboard` writes
//! them for diffusers' trainers (`--report_to tensorboard`): scalars, PNG images and the
//! hyper-parameters of the hparams plugin.
//!
//! The format: a file of records, each `u64` length (little-endian), the masked CRC-32C of
//! those 8 bytes, the data, the masked CRC-32C of the data; each record is a protobuf `Event`
//! (tensorflow/core/util/event.proto, summary.proto; the hparams plugin's plugin_data.proto).
//! No maintained Rust crate writes it (tensorboard-rs pins image 0.23 and protobuf 2), so the
//! few messages used are declared here for `prost` with their field numbers, and the framing
//! is the four lines of [`frame`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use prost::Message;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
    #[prost(message, optional, tag = "4")]
    pub image: Option<SummaryImage>,
    #[prost(message, optional, tag = "9")]
    pub metadata: Option<SummaryMetadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryImage {
    #[prost(int32, tag = "1")]
    pub height: i32,
    #[prost(int32, tag = "2")]
    pub width: i32,
    /// 3: RGB.
    #[prost(int32, tag = "3")]
    pub colorspace: i32,
    #[prost(bytes = "vec", tag = "4")]
    pub encoded_image_string: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<PluginData>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PluginData {
    #[prost(string, tag = "1")]
    pub plugin_name: String,
    #[prost(bytes = "vec", tag = "2")]
    pub content: Vec<u8>,
}

/// The hparams plugin's `HParamsPluginData`, with the two kinds of data written here.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamsPluginData {
    #[prost(int32, tag = "1")]
    pub version: i32,
    #[prost(message, optional, tag = "2")]
    pub experiment: Option<Experiment>,
    #[prost(message, optional, tag = "3")]
    pub session_start_info: Option<SessionStartInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Experiment {
    #[prost(message, repeated, tag = "4")]
    pub hparam_infos: Vec<HParamInfo>,
    #[prost(message, repeated, tag = "5")]
    pub metric_infos: Vec<MetricInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    /// DataType: 1 string, 2 bool, 3 float64.
    #[prost(int32, tag = "4")]
    pub r#type: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricInfo {
    #[prost(message, optional, tag = "1")]
    pub name: Option<MetricName>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricName {
    #[prost(string, tag = "1")]
    pub group: String,
    #[prost(string, tag = "2")]
    pub tag: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionStartInfo {
    #[prost(map = "string, message", tag = "1")]
    pub hparams: std::collections::HashMap<String, ProtoValue>,
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

/// `google.protobuf.Value`, the kinds used for hyper-parameters.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProtoValue {
    #[prost(double, optional, tag = "2")]
    pub number_value: Option<f64>,
    #[prost(string, optional, tag = "3")]
    pub string_value: Option<String>,
    #[prost(bool, optional, tag = "4")]
    pub bool_value: Option<bool>,
}

/// A hyper-parameter's value.
#[derive(Clone, Debug, PartialEq)]
pub enum HParam {
    Number(f64),
    Text(String),
    Bool(bool),
}

/// TFRecord's CRC: CRC-32C, rotated right by 15 bits, plus a constant.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// One record around `data`.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// Appends events to one new event file in a run folder.
pub struct EventWriter {
    file: std::fs::File,
    path: PathBuf,
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl EventWriter {
    /// Creates `dir` and a new event file in it, named as TensorBoard's writers name theirs
    /// (`events.out.tfevents.<seconds>.<host>.<pid>.<n>`), beginning with the version record.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let secs = now() as u64;
        let host = hostname();
        let pid = std::process::id();
        let (file, path) = (0..1000)
            .find_map(|n| {
                let path = dir.join(format!("events.out.tfevents.{secs}.{host}.{pid}.{n}"));
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .ok()
                    .map(|f| (f, path))
            })
            .with_context(|| format!("cannot create an event file in {}", dir.display()))?;
        let mut writer = EventWriter { file, path };
        writer.write(Event {
            wall_time: now(),
            file_version: Some("brain.Event:2".into()),
            ..Default::default()
        })?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, event: Event) -> Result<()> {
        self.file
            .write_all(&frame(&event.encode_to_vec()))
            .and_then(|_| self.file.flush())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }

    fn summary(&mut self, step: u64, values: Vec<SummaryValue>) -> Result<()> {
        self.write(Event {
            wall_time: now(),
            step: step as i64,
            summary: Some(Summary { value: values }),
            ..Default::default()
        })
    }

    /// Scalars of one step (TensorBoard's Scalars tab).
    pub fn scalars(&mut self, step: u64, values: &[(&str, f64)]) -> Result<()> {
        let values = values
            .iter()
            .map(|(tag, v)| SummaryValue {
                tag: tag.to_string(),
                simple_value: Some(*v as f32),
                ..Default::default()
            })
            .collect();
        self.summary(step, values)
    }

    /// A PNG image of `width` x `height` RGB pixels (the Images tab).
    pub fn png(
        &mut self,
        step: u64,
        tag: &str,
        png: Vec<u8>,
        width: u32,
        height: u32,
    ) -> Result<()> {
        let image = SummaryImage {
            height: height as i32,
            width: width as i32,
            colorspace: 3,
            encoded_image_string: png,
        };
        let value = SummaryValue {
            tag: tag.to_string(),
            image: Some(image),
            ..Default::default()
        };
        self.summary(step, vec![value])
    }

    /// The run's hyper-parameters (the HParams tab), with `metrics` (scalar tags) as the
    /// columns they are compared by: an experiment summary and a session start, as
    /// `SummaryWriter.add_hparams` writes them.
    pub fn hparams(&mut self, hparams: &BTreeMap<String, HParam>, metrics: &[&str]) -> Result<()> {
        let kind = |v: &HParam| match v {
            HParam::Text(_) => 1,
            HParam::Bool(_) => 2,
            HParam::Number(_) => 3,
        };
        let experiment = Experiment {
            hparam_infos: hparams
                .iter()
                .map(|(name, v)| HParamInfo {
                    name: name.clone(),
                    r#type: kind(v),
                })
                .collect(),
            metric_infos: metrics
                .iter()
                .map(|tag| MetricInfo {
                    name: Some(MetricName {
                        group: String::new(),
                        tag: tag.to_string(),
                    }),
                })
                .collect(),
        };
        let start = SessionStartInfo {
            hparams: hparams
                .iter()
                .map(|(name, v)| {
                    let value = match v {
                        HParam::Number(x) => ProtoValue {
                            number_value: Some(*x),
                            ..Default::default()
                        },
                        HParam::Text(s) => ProtoValue {
                            string_value: Some(s.clone()),
                            ..Default::default()
                        },
                        HParam::Bool(b) => ProtoValue {
                            bool_value: Some(*b),
                            ..Default::default()
                        },
                    };
                    (name.clone(), value)
                })
                .collect(),
            start_time_secs: now(),
        };
        let plugin = |data: HParamsPluginData, tag: &str| SummaryValue {
            tag: tag.to_string(),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(PluginData {
                    plugin_name: "hparams".into(),
                    content: data.encode_to_vec(),
                }),
            }),
            ..Default::default()
        };
        let experiment = HParamsPluginData {
            experiment: Some(experiment),
            ..Default::default()
        };
        let start = HParamsPluginData {
            session_start_info: Some(start),
            ..Default::default()
        };
        self.summary(0, vec![plugin(experiment, "_hparams_/experiment")])?;
        self.summary(0, vec![plugin(start, "_hparams_/session_start_info")])
    }
}

/// The machine's name for event file names (`localhost` when unknown).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_masked_crc_is_tfrecords() {
        // CRC-32C("123456789") = 0xE3069283 (RFC 3720's check value); masked by hand:
        // rotate right 15 = 0x2507C60D, + 0xA282EAD8 = 0xC78AB0E5.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
        let record = frame(b"abc");
        assert_eq!(&record[..8], &3u64.to_le_bytes());
        assert_eq!(&record[12..15], b"abc");
        assert_eq!(record.len(), 8 + 4 + 3 + 4);
    }
}
