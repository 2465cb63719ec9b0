//! Reading the tensors of a `torch.save` file (A1111 `.pt` embeddings, diffusers `.bin`)
//! without running Python's unpickler: the zip archive's entries are read directly, and the
//! pickle is interpreted by a small machine that knows the opcodes `torch.save` writes for
//! dicts, lists, strings, numbers and tensors. Nothing is ever called: the only globals it
//! accepts are the handful torch uses for tensors (`_rebuild_tensor_v2`, `_rebuild_parameter`,
//! typed storages, `OrderedDict`), interpreted by name; any other global is an error. This is the
//! safety `torch.load(weights_only=True)` aims for, by construction.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};

use super::zip_archive::stored_entries;

/// A value of the pickled object tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Tensor(Tensor),
    /// An accepted global, by `module.name`, until it is called.
    Global(&'static str),
    /// A storage reference from a persistent id: element type and archive key.
    Storage(StorageType, String),
}

impl Value {
    /// The entry of a dict keyed by the string `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// A dense tensor, converted to f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageType {
    F32,
    F16,
    BF16,
    F64,
}

const GLOBALS: [(&str, Option<StorageType>); 7] = [
    ("torch._utils._rebuild_tensor_v2", None),
    ("torch._utils._rebuild_parameter", None),
    ("collections.OrderedDict", None),
    ("torch.FloatStorage", Some(StorageType::F32)),
    ("torch.HalfStorage", Some(StorageType::F16)),
    ("torch.BFloat16Storage", Some(StorageType::BF16)),
    ("torch.DoubleStorage", Some(StorageType::F64)),
];

/// The object a `torch.save` zip archive holds.
pub fn load(bytes: &[u8]) -> Result<Value> {
    let entries = stored_entries(bytes)?;
    let (pkl_name, pkl) = entries
        .iter()
        .find(|(name, _)| name == "data.pkl" || name.ends_with("/data.pkl"))
        .context("no data.pkl in the archive: not a torch.save file")?;
    let storages = Storages {
        prefix: pkl_name[..pkl_name.len() - "data.pkl".len()].to_string(),
        entries: &entries,
    };
    Machine::default().run(pkl, &storages)
}

/// The archive's tensor storages, `<prefix>data/<key>`.
struct Storages<'a> {
    prefix: String,
    entries: &'a [(String, &'a [u8])],
}

impl<'a> Storages<'a> {
    fn get(&self, key: &str) -> Result<&'a [u8]> {
        let name = format!("{}data/{key}", self.prefix);
        self.entries
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, data)| *data)
            .with_context(|| format!("the archive has no storage {name}"))
    }
}

/// The pickle's bytes and the read position.
struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let b = self
            .data
            .get(self.at..self.at.saturating_add(n))
            .context("truncated pickle")?;
        self.at += n;
        Ok(b)
    }

    /// The rest of the line, without the newline (GLOBAL's module and name).
    fn line(&mut self) -> Result<&'a [u8]> {
        let rest = self.data.get(self.at..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .context("unterminated line in the pickle")?;
        self.at += end + 1;
        Ok(&rest[..end])
    }
}

/// Limits that no embedding file comes near (an A1111 `.pt` runs a few hundred opcodes over a
/// dozen containers), against crafted pickles: deep nesting, memo doubling, endless streams.
const MAX_OPS: usize = 1 << 20;
const MAX_CONTAINERS: usize = 4096;
/// Values created, copies from the memo included.
const MAX_VALUES: usize = 1 << 20;

#[derive(Default)]
struct Machine {
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    ops: usize,
    containers: usize,
    values: usize,
}

/// How many values `v` holds, itself included.
fn count_values(v: &Value) -> usize {
    match v {
        Value::Tuple(items) | Value::List(items) => {
            1 + items.iter().map(count_values).sum::<usize>()
        }
        Value::Dict(items) => {
            1 + items
                .iter()
                .map(|(k, v)| count_values(k) + count_values(v))
                .sum::<usize>()
        }
        _ => 1,
    }
}

impl Machine {
    fn pop(&mut self) -> Result<Value> {
        self.stack.pop().context("pickle stack underflow")
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().context("pickle mark missing")?;
        if mark > self.stack.len() {
            bail!("pickle mark past the stack");
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&mut self) -> Result<&mut Value> {
        self.stack.last_mut().context("pickle stack underflow")
    }

    /// Counts `n` new values (`containers` of them containers) against the limits.
    fn spend(&mut self, n: usize, containers: usize) -> Result<()> {
        self.values = self.values.saturating_add(n);
        self.containers = self.containers.saturating_add(containers);
        if self.values > MAX_VALUES || self.containers > MAX_CONTAINERS {
            bail!(
                "the pickle builds more than {MAX_VALUES} values or {MAX_CONTAINERS} containers: not an embedding file"
            );
        }
        Ok(())
    }

    fn run(mut self, pkl: &[u8], storages: &Storages<'_>) -> Result<Value> {
        let mut r = Reader { data: pkl, at: 0 };
        let le = |b: &[u8]| b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64);
        loop {
            let op = r.take(1)?[0];
            self.ops += 1;
            if self.ops > MAX_OPS {
                bail!("the pickle runs more than {MAX_OPS} opcodes: not an embedding file");
            }
            if matches!(op, b'}' | b']' | b')' | b't' | 0x85..=0x87) {
                self.spend(1, 1)?;
            } else {
                self.spend(1, 0)?;
            }
            match op {
                0x80 => {
                    r.take(1)?; // PROTO
                }
                0x95 => {
                    r.take(8)?; // FRAME
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = le(r.take(4)?) as u32 as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = r.take(1)?[0];
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = le(r.take(2)?);
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a => {
                    let n = r.take(1)?[0] as usize;
                    if n > 8 {
                        bail!("integer of {n} bytes in the pickle");
                    }
                    let b = r.take(n)?;
                    let raw = le(b);
                    // Two's complement over n bytes.
                    let v = if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        raw as i64 - (1i64 << (8 * n))
                    } else {
                        raw as i64
                    };
                    self.stack.push(Value::Int(v));
                }
                b'G' => {
                    let b = r.take(8)?;
                    let v = f64::from_be_bytes(b.try_into().expect("8 bytes"));
                    self.stack.push(Value::Float(v));
                }
                b'X' | 0x8c | 0x8d | b'U' | b'T' | b'C' | b'B' => {
                    let n = match op {
                        0x8c | b'U' | b'C' => r.take(1)?[0] as usize,
                        0x8d => le(r.take(8)?) as usize,
                        _ => le(r.take(4)?) as usize,
                    };
                    let text = String::from_utf8_lossy(r.take(n)?).into_owned();
                    self.stack.push(Value::Str(text));
                }
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        bail!("pickle stack underflow");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b's' | b'u' => {
                    let items = if op == b's' {
                        let v = self.pop()?;
                        vec![self.pop()?, v]
                    } else {
                        self.pop_mark()?
                    };
                    let Value::Dict(dict) = self.top()? else {
                        bail!("pickle sets items on something that is not a dict");
                    };
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        dict.push((k, v));
                    }
                }
                b'a' | b'e' => {
                    let items = if op == b'a' {
                        vec![self.pop()?]
                    } else {
                        self.pop_mark()?
                    };
                    let Value::List(list) = self.top()? else {
                        bail!("pickle appends to something that is not a list");
                    };
                    list.extend(items);
                }
                b'q' | b'r' | 0x94 => {
                    let key = match op {
                        b'q' => r.take(1)?[0] as u32,
                        b'r' => le(r.take(4)?) as u32,
                        _ => self.memo.len() as u32,
                    };
                    let n = count_values(self.top()?);
                    self.spend(n, 0)?;
                    let top = self.top()?.clone();
                    self.memo.insert(key, top);
                }
                b'h' | b'j' => {
                    let key = if op == b'h' {
                        r.take(1)?[0] as u32
                    } else {
                        le(r.take(4)?) as u32
                    };
                    let n = count_values(self.memo.get(&key).context("pickle memo miss")?);
                    self.spend(n, 0)?;
                    let v = self.memo.get(&key).context("pickle memo miss")?.clone();
                    self.stack.push(v);
                }
                b'c' | 0x93 => {
                    let name = if op == b'c' {
                        let module = r.line()?;
                        let name = r.line()?;
                        format!(
                            "{}.{}",
                            String::from_utf8_lossy(module),
                            String::from_utf8_lossy(name)
                        )
                    } else {
                        let (name, module) = (self.pop()?, self.pop()?);
                        match (module, name) {
                            (Value::Str(m), Value::Str(n)) => format!("{m}.{n}"),
                            _ => bail!("pickle global with a non-string name"),
                        }
                    };
                    let known = GLOBALS
                        .iter()
                        .find(|(g, _)| *g == name)
                        .map(|(g, _)| *g)
                        .ok_or_else(|| {
                            anyhow!("the pickle refers to {name}, which ti-xla does not load (only tensors, dicts, lists, strings and numbers)")
                        })?;
                    self.stack.push(Value::Global(known));
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.stack.push(persistent(pid)?);
                }
                b'R' => {
                    let (args, func) = (self.pop()?, self.pop()?);
                    let Value::Tuple(args) = args else {
                        bail!("pickle call arguments are not a tuple");
                    };
                    let value = match func {
                        Value::Global("collections.OrderedDict") => Value::Dict(Vec::new()),
                        Value::Global("torch._utils._rebuild_tensor_v2") => {
                            Value::Tensor(rebuild_tensor(&args, storages)?)
                        }
                        Value::Global("torch._utils._rebuild_parameter") => match args.first() {
                            Some(Value::Tensor(t)) => Value::Tensor(t.clone()),
                            _ => bail!("_rebuild_parameter without a tensor"),
                        },
                        other => bail!("the pickle calls {other:?}, which ti-xla does not do"),
                    };
                    self.stack.push(value);
                }
                b'b' => {
                    // BUILD sets an object's state; dicts and tensors here have none that
                    // matters (an OrderedDict's state is empty).
                    self.pop()?;
                }
                other => bail!("pickle opcode 0x{other:02x} is not supported in embedding files"),
            }
        }
    }
}

/// `('storage', torch.XStorage, key, location, numel)`.
fn persistent(pid: Value) -> Result<Value> {
    let Value::Tuple(items) = pid else {
        bail!("persistent id is not a tuple");
    };
    match items.as_slice() {
        [Value::Str(kind), Value::Global(class), Value::Str(key), ..] if kind == "storage" => {
            let dtype = GLOBALS
                .iter()
                .find(|(g, _)| g == class)
                .and_then(|(_, t)| *t)
                .with_context(|| format!("{class} is not a float storage"))?;
            Ok(Value::Storage(dtype, key.clone()))
        }
        _ => bail!("persistent id {items:?} is not a storage"),
    }
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
fn rebuild_tensor(args: &[Value], storages: &Storages<'_>) -> Result<Tensor> {
    let ints = |v: &Value| -> Result<Vec<usize>> {
        match v {
            Value::Tuple(items) => items
                .iter()
                .map(|i| match i {
                    Value::Int(n) if *n >= 0 => Ok(*n as usize),
                    _ => bail!("tensor size or stride is not a tuple of integers"),
                })
                .collect(),
            _ => bail!("tensor size or stride is not a tuple"),
        }
    };
    let [Value::Storage(dtype, key), Value::Int(offset), size, stride, ..] = args else {
        bail!("_rebuild_tensor_v2 with unexpected arguments");
    };
    let (shape, stride) = (ints(size)?, ints(stride)?);
    // Row-major strides: the only layout torch.save of a fresh tensor writes.
    let mut want = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        want[i] = want[i + 1].saturating_mul(shape[i + 1]);
    }
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .context("a tensor's size overflows")?;
    if count > 1 && stride != want {
        bail!("a tensor with strides {stride:?} (not contiguous) is not read");
    }
    let bytes = storages.get(key)?;
    let width = match dtype {
        StorageType::F32 => 4,
        StorageType::F16 | StorageType::BF16 => 2,
        StorageType::F64 => 8,
    };
    let past = || anyhow!("a tensor runs past its storage ({} bytes)", bytes.len());
    let start = usize::try_from(*offset)
        .ok()
        .and_then(|o| o.checked_mul(width))
        .ok_or_else(past)?;
    let end = count
        .checked_mul(width)
        .and_then(|n| n.checked_add(start))
        .ok_or_else(past)?;
    let data = bytes.get(start..end).ok_or_else(past)?;
    let values = data
        .chunks_exact(width)
        .map(|c| match dtype {
            StorageType::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            StorageType::F16 => f16::from_le_bytes([c[0], c[1]]).to_f32(),
            StorageType::BF16 => bf16::from_le_bytes([c[0], c[1]]).to_f32(),
            StorageType::F64 => f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32,
        })
        .collect();
    Ok(Tensor { shape, values })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unpickle(pkl: &[u8]) -> Result<Value> {
        let storages = Storages {
            prefix: String::new(),
            entries: &[("data/0".to_string(), &[0, 0, 128, 63, 0, 0, 0, 64][..])],
        };
        Machine::default().run(pkl, &storages)
    }

    #[test]
    fn reads_dicts_numbers_and_tensors() {
        // {"a": [1, -2, 3.5], "t": _rebuild_tensor_v2(storage f32 "0", 0, (2,), (1,), False,
        // OrderedDict())}, protocol 2 as torch.save writes it.
        let mut pkl = b"\x80\x02}q\x00(X\x01\x00\x00\x00a]q\x01(K\x01\x8a\x01\xfeG@\x0c\x00\x00\x00\x00\x00\x00eX\x01\x00\x00\x00t".to_vec();
        pkl.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQK\x00K\x02\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRu.");
        let v = unpickle(&pkl).unwrap();
        assert_eq!(
            v.get("a"),
            Some(&Value::List(vec![
                Value::Int(1),
                Value::Int(-2),
                Value::Float(3.5)
            ]))
        );
        assert_eq!(
            v.get("t"),
            Some(&Value::Tensor(Tensor {
                shape: vec![2],
                values: vec![1.0, 2.0]
            }))
        );
    }

    #[test]
    fn crafted_pickles_hit_a_limit_instead_of_the_stack_or_memory() {
        // 200,000 nested lists: `]` then append each into the next.
        let mut deep = b"\x80\x02".to_vec();
        deep.extend(std::iter::repeat_n(b']', 200_000));
        deep.extend(std::iter::repeat_n(b'a', 199_999));
        deep.push(b'.');
        let err = unpickle(&deep).unwrap_err().to_string();
        assert!(err.contains("containers"), "{err}");
        // Memo doubling: a list memoised, then a list of two copies of it memoised in its
        // place, 40 times (2^40 values if copied).
        let mut doubling = b"\x80\x02]q\x00".to_vec();
        for _ in 0..40 {
            doubling.extend(b"](h\x00h\x00eq\x00");
        }
        doubling.push(b'.');
        let err = unpickle(&doubling).unwrap_err().to_string();
        assert!(err.contains("values"), "{err}");
        // A storage offset of 2^62 does not wrap around to the start.
        let mut far = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQ\x8a\x08".to_vec();
        far.extend((1u64 << 62).to_le_bytes());
        far.extend(b"K\x02\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR.");
        let err = unpickle(&far).unwrap_err().to_string();
        assert!(err.contains("runs past its storage"), "{err}");
    }

    #[test]
    fn refuses_other_globals() {
        let err = unpickle(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00lsR.").unwrap_err();
        assert!(err.to_string().contains("os.system"), "{err}");
        let err = unpickle(b"\x80\x02cbuiltins\neval\n.").unwrap_err();
        assert!(err.to_string().contains("builtins.eval"), "{err}");
    }
}
