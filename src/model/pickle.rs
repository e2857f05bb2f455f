//! A reader for PyTorch's legacy (pre-1.6, non-zip) `torch.save` files.
//!
//! Such a file is a sequence of pickles (magic number, protocol version,
//! system info, the object, the list of storage keys) followed by each
//! storage's raw bytes. Pickle is a program for a stack machine; this reader
//! runs only the opcodes that build plain containers and tensors, and only
//! "calls" a fixed list of known constructors. Any other global (`os.system`,
//! a user class) is refused, so loading a file never runs code.

use std::collections::HashMap;

use tch::{Kind, Tensor};

const LEGACY_MAGIC: u128 = 0x1950a86a20f9469cfc6c;
const LEGACY_PROTOCOL: i64 = 1001;
/// Nesting limit for containers, against hostile inputs.
const MAX_STACK: usize = 1 << 20;
/// The most values the memo may copy in one pickle. The memo holds copies, not shared
/// references, so a pickle that keeps putting a value and its copy together would double
/// its memory at every step; a real state_dict copies a few values per tensor.
const MAX_COPIED: usize = 1 << 24;
/// The most bytes one tensor of a weights file may have (1 TiB), whatever its metadata says.
const MAX_TENSOR_BYTES: u64 = 1 << 40;
/// How much a member of a zip-format `.pth` may expand: PyTorch stores them uncompressed,
/// and float weights do not compress, so a member that inflates more is a zip bomb.
const MAX_EXPANSION: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PickleError {
    #[error("truncated file: {0}")]
    Truncated(&'static str),
    #[error("not a legacy torch.save file (bad magic number)")]
    BadMagic,
    #[error("unsupported torch.save protocol version {0}")]
    BadProtocol(i64),
    #[error("refusing global `{0}`: only tensors and plain containers are loaded")]
    RefusedGlobal(String),
    #[error("unsupported pickle opcode 0x{0:02x} at byte {1}")]
    Opcode(u8, usize),
    #[error("malformed pickle: {0}")]
    Malformed(String),
}

#[derive(Debug, Clone)]
enum Value {
    None,
    /// A bool, float or bytes value: kept on the stack, never inspected.
    Scalar,
    Int(i64),
    BigInt(Vec<u8>),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// A global from the allowed list.
    Global(Callable),
    StorageType(Kind),
    Storage {
        key: String,
        kind: Kind,
    },
    Tensor(TensorRef),
    Mark,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Callable {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
}

#[derive(Debug, Clone)]
struct TensorRef {
    key: String,
    kind: Kind,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

fn allowed_global(module: &str, name: &str) -> Option<Value> {
    let v = match (module, name) {
        ("collections", "OrderedDict") => Value::Global(Callable::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Value::Global(Callable::RebuildTensorV2),
        ("torch._utils", "_rebuild_tensor") => Value::Global(Callable::RebuildTensor),
        ("torch._utils", "_rebuild_parameter") => Value::Global(Callable::RebuildParameter),
        ("torch", storage) => Value::StorageType(match storage {
            "FloatStorage" => Kind::Float,
            "DoubleStorage" => Kind::Double,
            "HalfStorage" => Kind::Half,
            "BFloat16Storage" => Kind::BFloat16,
            "LongStorage" => Kind::Int64,
            "IntStorage" => Kind::Int,
            "ShortStorage" => Kind::Int16,
            "CharStorage" => Kind::Int8,
            "ByteStorage" => Kind::Uint8,
            "BoolStorage" => Kind::Bool,
            _ => return None,
        }),
        _ => return None,
    };
    Some(v)
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
    /// Values copied in and out of the memo so far.
    copied: usize,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Machine { data, pos, stack: Vec::new(), memo: HashMap::new(), copied: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or(PickleError::Truncated("inside a pickle"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn line(&mut self) -> Result<String, PickleError> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|b| *b == b'\n').ok_or(PickleError::Truncated("in a GLOBAL"))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn pop(&mut self) -> Result<Value, PickleError> {
        self.stack.pop().ok_or_else(|| PickleError::Malformed("stack underflow".into()))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, PickleError> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or_else(|| PickleError::Malformed("no MARK".into()))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn push(&mut self, v: Value) -> Result<(), PickleError> {
        if self.stack.len() >= MAX_STACK {
            return Err(PickleError::Malformed("stack too deep".into()));
        }
        self.stack.push(v);
        Ok(())
    }

    fn string(&mut self, n: usize) -> Result<Value, PickleError> {
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map(Value::Str).map_err(|_| PickleError::Malformed("invalid UTF-8 string".into()))
    }

    /// Runs one pickle from the current position to its STOP and returns its value.
    fn run(&mut self) -> Result<Value, PickleError> {
        self.stack.clear();
        self.memo.clear();
        loop {
            let at = self.pos;
            let op = self.u8().map_err(|_| PickleError::Truncated("before the end of a pickle"))?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.u64()?; // FRAME
                }
                b'.' => return self.pop(),
                b'(' => self.push(Value::Mark)?,
                b'}' => self.push(Value::Dict(vec![]))?,
                b']' => self.push(Value::List(vec![]))?,
                b')' => self.push(Value::Tuple(vec![]))?,
                b'N' => self.push(Value::None)?,
                0x88 | 0x89 => self.push(Value::Scalar)?,
                b'K' => {
                    let v = self.u8()? as i64;
                    self.push(Value::Int(v))?
                }
                b'M' => {
                    let b = self.take(2)?;
                    self.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64))?
                }
                b'J' => {
                    let v = self.u32()? as i32 as i64;
                    self.push(Value::Int(v))?
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.u8()? as usize } else { self.u32()? as usize };
                    let b = self.take(n)?.to_vec();
                    let v = if n <= 8 {
                        let mut buf = if b.last().is_some_and(|x| x & 0x80 != 0) { [0xff; 8] } else { [0; 8] };
                        buf[..n].copy_from_slice(&b);
                        Value::Int(i64::from_le_bytes(buf))
                    } else {
                        Value::BigInt(b)
                    };
                    self.push(v)?
                }
                b'G' => {
                    self.take(8)?;
                    self.push(Value::Scalar)?
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.push(v)?
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.push(v)?
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).map_err(|_| PickleError::Truncated("string"))?;
                    let v = self.string(n)?;
                    self.push(v)?
                }
                b'U' | b'T' => {
                    // Python 2 byte strings, as legacy files write their storage keys.
                    let n = if op == b'U' { self.u8()? as usize } else { self.u32()? as usize };
                    let b = self.take(n)?;
                    self.push(Value::Str(String::from_utf8_lossy(b).into_owned()))?
                }
                b'C' | b'B' => {
                    let n = if op == b'C' { self.u8()? as usize } else { self.u32()? as usize };
                    self.take(n)?;
                    self.push(Value::Scalar)?
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memoize(k)?
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memoize(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memoize(k)?
                }
                b'h' | b'j' => {
                    let k = if op == b'h' { self.u8()? as u32 } else { self.u32()? };
                    let v = self.memo.get(&k).ok_or_else(|| PickleError::Malformed(format!("memo {k} unset")))?;
                    self.charge(weight(v, MAX_COPIED))?;
                    let v = self.memo[&k].clone();
                    self.push(v)?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(PickleError::Malformed("stack underflow".into()));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Value::Tuple(items))?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.list_mut()?.push(v);
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.list_mut()?.extend(items);
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.dict_mut()?.push((k, v));
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err(PickleError::Malformed("odd SETITEMS".into()));
                    }
                    let mut it = items.into_iter();
                    let d = self.dict_mut()?;
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.push((k, v));
                    }
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    let v =
                        allowed_global(&module, &name).ok_or(PickleError::RefusedGlobal(format!("{module}.{name}")))?;
                    self.push(v)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (module, name) else {
                        return Err(PickleError::Malformed("STACK_GLOBAL without strings".into()));
                    };
                    let v =
                        allowed_global(&module, &name).ok_or(PickleError::RefusedGlobal(format!("{module}.{name}")))?;
                    self.push(v)?
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_storage(pid)?;
                    self.push(v)?
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = reduce(func, args)?;
                    self.push(v)?
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = reduce(cls, args)?;
                    self.push(v)?
                }
                b'b' => {
                    // BUILD: only an OrderedDict's instance state (`_metadata`) is expected; it is dropped.
                    let _state = self.pop()?;
                    match self.stack.last() {
                        Some(Value::Dict(_)) | Some(Value::Tensor(_)) => {}
                        _ => return Err(PickleError::Malformed("BUILD on an unsupported object".into())),
                    }
                }
                _ => return Err(PickleError::Opcode(op, at)),
            }
        }
    }

    fn memoize(&mut self, k: u32) -> Result<(), PickleError> {
        let top = self.stack.last().ok_or_else(|| PickleError::Malformed("memoize on empty stack".into()))?;
        self.charge(weight(top, MAX_COPIED))?;
        let top = self.stack.last().expect("checked above").clone();
        self.memo.insert(k, top);
        Ok(())
    }

    /// Counts `values` copied through the memo against [`MAX_COPIED`], before they are.
    fn charge(&mut self, values: usize) -> Result<(), PickleError> {
        self.copied = self.copied.saturating_add(values);
        if self.copied > MAX_COPIED {
            return Err(PickleError::Malformed(format!(
                "the memo copies more than {MAX_COPIED} values (a pickle that doubles itself?)"
            )));
        }
        Ok(())
    }

    fn list_mut(&mut self) -> Result<&mut Vec<Value>, PickleError> {
        match self.stack.last_mut() {
            Some(Value::List(l)) => Ok(l),
            _ => Err(PickleError::Malformed("APPEND to a non-list".into())),
        }
    }

    fn dict_mut(&mut self) -> Result<&mut Vec<(Value, Value)>, PickleError> {
        match self.stack.last_mut() {
            Some(Value::Dict(d)) => Ok(d),
            _ => Err(PickleError::Malformed("SETITEM on a non-dict".into())),
        }
    }
}

/// The number of values in `v`, counted up to a little past `budget`.
fn weight(v: &Value, budget: usize) -> usize {
    let mut n = 0;
    let mut todo = vec![v];
    while let Some(v) = todo.pop() {
        n += 1;
        if n > budget {
            break;
        }
        match v {
            Value::Tuple(items) | Value::List(items) => todo.extend(items),
            Value::Dict(pairs) => todo.extend(pairs.iter().flat_map(|(k, v)| [k, v])),
            _ => {}
        }
    }
    n
}

fn persistent_storage(pid: Value) -> Result<Value, PickleError> {
    // ('storage', storage_type, key, location, numel[, view_metadata])
    let Value::Tuple(items) = pid else {
        return Err(PickleError::Malformed("persistent id is not a tuple".into()));
    };
    match items.as_slice() {
        [Value::Str(tag), Value::StorageType(kind), Value::Str(key), _location, _numel, rest @ ..]
            if tag == "storage" && rest.iter().all(|v| matches!(v, Value::None)) =>
        {
            Ok(Value::Storage { key: key.clone(), kind: *kind })
        }
        _ => Err(PickleError::Malformed("unsupported persistent id (storage views are not supported)".into())),
    }
}

fn ints(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::Tuple(items) | Value::List(items) => {
            items.iter().map(|i| if let Value::Int(n) = i { Some(*n) } else { None }).collect()
        }
        _ => None,
    }
}

fn reduce(func: Value, args: Value) -> Result<Value, PickleError> {
    let Value::Global(callable) = func else {
        return Err(PickleError::Malformed("REDUCE on something not callable".into()));
    };
    let Value::Tuple(args) = args else {
        return Err(PickleError::Malformed("REDUCE arguments are not a tuple".into()));
    };
    match callable {
        Callable::OrderedDict if args.is_empty() => Ok(Value::Dict(vec![])),
        Callable::RebuildTensorV2 | Callable::RebuildTensor => {
            let (Some(Value::Storage { key, kind }), Some(Value::Int(offset)), Some(size), Some(stride)) =
                (args.first(), args.get(1), args.get(2).and_then(ints), args.get(3).and_then(ints))
            else {
                return Err(PickleError::Malformed("bad tensor arguments".into()));
            };
            if size.len() != stride.len() || size.iter().chain(&stride).any(|v| *v < 0) || *offset < 0 {
                return Err(PickleError::Malformed("bad tensor size or stride".into()));
            }
            Ok(Value::Tensor(TensorRef { key: key.clone(), kind: *kind, offset: *offset, size, stride }))
        }
        Callable::RebuildParameter => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err(PickleError::Malformed("bad parameter arguments".into())),
        },
        other => Err(PickleError::Malformed(format!("bad arguments for {other:?}"))),
    }
}

/// Reads a legacy `torch.save` file of a state_dict into (name, tensor) pairs, in file order.
pub(crate) fn read_legacy_state_dict(data: &[u8]) -> Result<Vec<(String, Tensor)>, PickleError> {
    let mut m = Machine::new(data, 0);
    // Whatever the first pickle is, if it is not the magic number this is not a legacy file.
    match m.run().map_err(|_| PickleError::BadMagic)? {
        Value::BigInt(b) if b.len() <= 16 => {
            let mut buf = [0u8; 16];
            buf[..b.len()].copy_from_slice(&b);
            if u128::from_le_bytes(buf) != LEGACY_MAGIC {
                return Err(PickleError::BadMagic);
            }
        }
        _ => return Err(PickleError::BadMagic),
    }
    match m.run()? {
        Value::Int(LEGACY_PROTOCOL) => {}
        Value::Int(v) => return Err(PickleError::BadProtocol(v)),
        _ => return Err(PickleError::Malformed("protocol version is not an integer".into())),
    }
    let _sys_info = m.run()?;
    let obj = m.run()?;
    let keys = match m.run()? {
        Value::List(keys) => keys
            .into_iter()
            .map(|k| if let Value::Str(s) = k { Ok(s) } else { Err(PickleError::Malformed("storage key".into())) })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(PickleError::Malformed("storage key list".into())),
    };

    let entries = state_dict_entries(obj)?;
    let kinds: HashMap<&String, Kind> = entries.iter().map(|(_, t)| (&t.key, t.kind)).collect();
    // Storage payloads follow in the order of `keys`: an 8-byte element count, then the bytes.
    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut pos = m.pos;
    for key in keys {
        let kind = *kinds.get(&key).ok_or_else(|| PickleError::Malformed(format!("storage {key} is not used")))?;
        let count = data.get(pos..pos + 8).ok_or(PickleError::Truncated("in a storage header"))?;
        let count = u64::from_le_bytes(count.try_into().expect("8 bytes"));
        let bytes = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(kind.elt_size_in_bytes()))
            .ok_or(PickleError::Truncated("storage size overflows"))?;
        let start = pos + 8;
        let payload = data.get(start..start.saturating_add(bytes)).ok_or(PickleError::Truncated("in storage data"))?;
        storages.insert(key, Tensor::from_data_size(payload, &[count as i64], kind));
        pos = start + bytes;
    }
    assemble(entries, &storages)
}

/// Reads a zip-format `torch.save` file (PyTorch >= 1.6, torchvision's weights):
/// `<archive>/data.pkl` is the pickled state_dict, `<archive>/data/<key>` each storage's bytes.
pub(crate) fn read_zip_state_dict<R: std::io::Read + std::io::Seek>(
    reader: R,
) -> Result<Vec<(String, Tensor)>, PickleError> {
    use std::io::Read;
    let mut zip =
        zip::ZipArchive::new(reader).map_err(|e| PickleError::Malformed(format!("not a zip archive: {e}")))?;
    let pkl = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_string))
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .ok_or_else(|| PickleError::Malformed("no data.pkl in the archive".into()))?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let mut read = |name: &str| -> Result<Vec<u8>, PickleError> {
        let mut f =
            zip.by_name(name).map_err(|_| PickleError::Malformed(format!("{name} missing from the archive")))?;
        if f.size() > f.compressed_size().saturating_mul(MAX_EXPANSION).saturating_add(1 << 20) {
            return Err(PickleError::Malformed(format!(
                "{name} expands from {} to {} bytes: refused as a zip bomb",
                f.compressed_size(),
                f.size()
            )));
        }
        let declared = f.size();
        let mut buf = Vec::with_capacity(declared.min(1 << 26) as usize);
        (&mut f)
            .take(declared)
            .read_to_end(&mut buf)
            .map_err(|e| PickleError::Malformed(format!("cannot read {name}: {e}")))?;
        Ok(buf)
    };
    if let Ok(order) = read(&format!("{prefix}byteorder"))
        && order != b"little"
    {
        return Err(PickleError::Malformed("big-endian files are not supported".into()));
    }
    let data = read(&pkl)?;
    let entries = state_dict_entries(Machine::new(&data, 0).run()?)?;
    let mut storages: HashMap<String, Tensor> = HashMap::new();
    for (_, t) in &entries {
        if storages.contains_key(&t.key) {
            continue;
        }
        let bytes = read(&format!("{prefix}data/{}", t.key))?;
        let size = t.kind.elt_size_in_bytes();
        if bytes.len() % size != 0 {
            return Err(PickleError::Malformed(format!("storage {} has a partial element", t.key)));
        }
        storages.insert(t.key.clone(), Tensor::from_data_size(&bytes, &[(bytes.len() / size) as i64], t.kind));
    }
    assemble(entries, &storages)
}

/// The (name, tensor reference) pairs of an unpickled state_dict.
fn state_dict_entries(obj: Value) -> Result<Vec<(String, TensorRef)>, PickleError> {
    let Value::Dict(entries) = obj else {
        return Err(PickleError::Malformed("the saved object is not a state_dict".into()));
    };
    entries
        .into_iter()
        .map(|(k, v)| match (k, v) {
            (Value::Str(name), Value::Tensor(t)) => Ok((name, t)),
            (Value::Str(name), _) => Err(PickleError::Malformed(format!("state_dict entry `{name}` is not a tensor"))),
            _ => Err(PickleError::Malformed("state_dict key is not a string".into())),
        })
        .collect()
}

/// Builds each entry's tensor as a view of its storage.
fn assemble(
    entries: Vec<(String, TensorRef)>,
    storages: &HashMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>, PickleError> {
    let mut out = Vec::with_capacity(entries.len());
    for (name, t) in entries {
        let storage =
            storages.get(&t.key).ok_or_else(|| PickleError::Malformed(format!("missing storage {}", t.key)))?;
        let numel = storage.size()[0];
        let past = || PickleError::Malformed(format!("`{name}` reaches past its storage"));
        // Checked: crafted sizes, strides and offsets must not overflow into a small "last" element.
        let last = t
            .size
            .iter()
            .zip(&t.stride)
            .try_fold(t.offset, |acc, (s, st)| (s - 1).max(0).checked_mul(*st).and_then(|d| acc.checked_add(d)));
        let elements = t.size.iter().try_fold(1i64, |acc, s| acc.checked_mul(*s));
        let bytes = elements.and_then(|e| u64::try_from(e).ok()?.checked_mul(t.kind.elt_size_in_bytes() as u64));
        match (last, elements, bytes) {
            (_, Some(0), _) => {}
            (Some(last), Some(elements), Some(bytes)) if last < numel && bytes <= MAX_TENSOR_BYTES => {
                // A view with more elements than its storage repeats them (stride 0): not a saved weight.
                if elements > numel {
                    return Err(PickleError::Malformed(format!(
                        "`{name}` has {elements} elements, more than its storage's {numel}"
                    )));
                }
            }
            _ => return Err(past()),
        }
        let tensor = storage.as_strided(&t.size, &t.stride, Some(t.offset)).contiguous();
        out.push((name, tensor));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A legacy file whose first pickle is `magic` and whose object pickle is `object`.
    fn legacy_file(object: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80, 2, 0x8a, 10];
        f.extend_from_slice(&LEGACY_MAGIC.to_le_bytes()[..10]);
        f.push(b'.');
        f.extend_from_slice(&[0x80, 2, b'M', 0xe9, 0x03, b'.']); // 1001
        f.extend_from_slice(&[0x80, 2, b'}', b'.']); // sys info
        f.extend_from_slice(object);
        f
    }

    #[test]
    fn refuses_os_system() {
        let evil = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echo\x85R.";
        let err = read_legacy_state_dict(&legacy_file(evil)).unwrap_err();
        assert_eq!(err.to_string(), "refusing global `os.system`: only tensors and plain containers are loaded");
    }

    #[test]
    fn refuses_wrong_magic() {
        let mut f = legacy_file(b"\x80\x02}.");
        f[4] ^= 0xff;
        assert!(matches!(read_legacy_state_dict(&f), Err(PickleError::BadMagic)));
        assert!(matches!(read_legacy_state_dict(b"PK\x03\x04junk"), Err(PickleError::BadMagic)));
    }

    #[test]
    fn reads_a_tensor_and_refuses_truncation() {
        // {'w': _rebuild_tensor_v2(storage('0', FloatStorage), 0, (2,), (1,), False, OrderedDict())}
        let mut obj = b"\x80\x02}X\x01\x00\x00\x00w".to_vec();
        obj.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        obj.extend_from_slice(
            b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02NtQ",
        );
        obj.extend_from_slice(b"K\x00K\x02\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRs.");
        let mut f = legacy_file(&obj);
        f.extend_from_slice(b"\x80\x02]X\x01\x00\x00\x000a.");
        f.extend_from_slice(&2u64.to_le_bytes());
        f.extend_from_slice(&1.5f32.to_le_bytes());
        f.extend_from_slice(&(-2.0f32).to_le_bytes());
        let sd = read_legacy_state_dict(&f).unwrap();
        assert_eq!(sd.len(), 1);
        assert_eq!(sd[0].0, "w");
        assert_eq!(Vec::<f32>::try_from(&sd[0].1).unwrap(), vec![1.5, -2.0]);
        let cut = &f[..f.len() - 3];
        assert!(matches!(read_legacy_state_dict(cut), Err(PickleError::Truncated(_))));
    }

    #[test]
    fn a_memo_that_doubles_itself_is_refused() {
        // [] memoized, then 47 times: (memo[0], memo[0]) memoized as the new memo[0].
        let mut obj = b"\x80\x02]q\x00".to_vec();
        for _ in 0..47 {
            obj.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        obj.push(b'.');
        assert_eq!(obj.len(), 5 + 47 * 7 + 1);
        let err = read_legacy_state_dict(&legacy_file(&obj)).unwrap_err();
        assert!(err.to_string().contains("the memo copies more than"), "{err}");
    }

    #[test]
    fn crafted_sizes_strides_and_offsets_are_refused() {
        let storages = HashMap::from([("0".to_string(), Tensor::from_slice(&[1f32, 2., 3., 4.]))]);
        let entry = |offset: i64, size: &[i64], stride: &[i64]| {
            let t =
                TensorRef { key: "0".into(), kind: Kind::Float, offset, size: size.to_vec(), stride: stride.to_vec() };
            assemble(vec![("w".to_string(), t)], &storages)
        };
        assert_eq!(entry(0, &[2, 2], &[2, 1]).unwrap()[0].1.size(), [2, 2]);
        let cases: [(i64, &[i64], &[i64]); 5] = [
            (i64::MAX, &[2], &[1]),
            (0, &[3], &[i64::MAX / 2]),
            (0, &[1 << 40], &[0]),
            (0, &[1 << 31, 1 << 31], &[0, 0]),
            (0, &[100], &[0]),
        ];
        for (offset, size, stride) in cases {
            let err = entry(offset, size, stride).unwrap_err().to_string();
            assert!(err.contains("reaches past its storage") || err.contains("more than its storage's 4"), "{err}");
        }
    }

    #[test]
    fn a_storage_that_inflates_like_a_bomb_is_refused() {
        use std::io::Write;
        let mut buf = std::io::Cursor::new(vec![]);
        let mut w = zip::ZipWriter::new(&mut buf);
        let deflated = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        // {'w': a tensor of 2 floats in storage '0'}, as in `reads_a_tensor_and_refuses_truncation`.
        let mut pkl = b"\x80\x02}X\x01\x00\x00\x00w".to_vec();
        pkl.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        pkl.extend_from_slice(
            b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02NtQ",
        );
        pkl.extend_from_slice(b"K\x00K\x02\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRs.");
        w.start_file("archive/data.pkl", deflated).unwrap();
        w.write_all(&pkl).unwrap();
        // Its storage: 16 MiB of zeros that deflate to a few kilobytes.
        w.start_file("archive/data/0", deflated).unwrap();
        w.write_all(&vec![0u8; 16 << 20]).unwrap();
        w.finish().unwrap();
        let bytes = buf.into_inner();
        assert!(bytes.len() < 1 << 20);
        let err = read_zip_state_dict(std::io::Cursor::new(&bytes)).unwrap_err().to_string();
        assert!(err.contains("refused as a zip bomb"), "{err}");
    }
}
