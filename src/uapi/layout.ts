/**
 * A tiny declarative description of Linux uapi structs, ioctls and constants.
 *
 * Every struct, ioctl number and flag the engine uses is declared once with
 * this module. The declarations drive three things: the accessors used on the
 * hot path (field reads and writes straight into a reusable buffer, no object
 * marshalling), the error messages (which fields of a failed request to show),
 * and the golden C probe that checks every size, offset and number against the
 * kernel's own headers (test/uapi-golden.spec.ts).
 *
 * Layout rules are those of x86-64 / aarch64 Linux: natural alignment, and
 * `__aligned_u64` is a plain 8-byte-aligned u64.
 */

/** The scalar kinds that appear in the uapi: __u8, __u16, __u32, __s32, __u64. */
export type Scalar = 'u8' | 'u16' | 'u32' | 's32' | 'u64';

/** A field: a scalar, or an object naming the scalar plus an array count or an explicit C path/offset. */
export type FieldDef =
  | Scalar
  | {
      readonly type: Scalar;
      /** Array length for fixed arrays such as `__u8 __reserved[3]`; arrays get no accessor. */
      readonly count?: number;
      /** The member designator in C, when it differs from the name (union members: `check_map.iova`). */
      readonly c?: string;
      /** Explicit byte offset (union members); otherwise the next naturally aligned offset. */
      readonly at?: number;
    };

/** A laid-out field. */
export interface Field {
  readonly name: string;
  readonly type: Scalar;
  readonly offset: number;
  readonly count: number;
  /** Member designator for offsetof() in the C probe. */
  readonly cPath: string;
}

const SCALAR_SIZE: Record<Scalar, number> = { u8: 1, u16: 2, u32: 4, s32: 4, u64: 8 };

type ValueOf<T> = T extends 'u64' ? bigint : T extends { type: 'u64' } ? bigint : number;
type Accessible<D> = {
  -readonly [K in keyof D as D[K] extends { count: number } ? never : K]: ValueOf<D[K]>;
};

/** A live view of one struct inside a byte buffer: one property per scalar field. */
export type StructView<D> = Accessible<D> & {
  /** The bytes of the struct (exactly `size` bytes, aliasing the caller's buffer). */
  readonly bytes: Uint8Array;
  /** Zero the struct and set its leading `size`/`argsz` field, as the kernel expects before each call. */
  reset(): StructView<D>;
  /** All scalar fields as a plain object (for logs and errors; not for the hot path). */
  toObject(): Record<string, number | bigint>;
};

/** What is known of any struct layout, whatever its fields (registries, the probe, error formatting). */
export interface StructInfo {
  /** The C tag, e.g. `iommu_ioas_map`. */
  readonly name: string;
  /** sizeof(struct name) */
  readonly size: number;
  readonly align: number;
  readonly fields: readonly Field[];
  /** The C type expression, for the probe: `struct iommu_ioas_map`. */
  readonly cType: string;
  /** The header that declares it. */
  readonly header: Header;
  /** Reads the scalar fields of a struct held in `buf` (for errors and logs). */
  decode(buf: Uint8Array, byteOffset?: number): Record<string, number | bigint>;
}

/** A struct layout; `view()` binds it to a buffer. */
export interface Struct<D extends Record<string, FieldDef> = Record<string, FieldDef>> extends StructInfo {
  /** The C tag, e.g. `iommu_ioas_map`. */
  readonly name: string;
  /** sizeof(struct name) */
  readonly size: number;
  readonly align: number;
  readonly fields: readonly Field[];
  /** Byte offset of each field, by name. */
  readonly offsetOf: { readonly [K in keyof D]: number };
  /** The C type expression, for the probe: `struct iommu_ioas_map`. */
  readonly cType: string;
  /** The header that declares it. */
  readonly header: Header;
  /** Bind to `buf` at `byteOffset` (the buffer must hold `size` bytes from there). */
  view(buf?: Uint8Array, byteOffset?: number): StructView<D>;
}

/** All declared structs, in declaration order (the golden probe walks this). */
export const STRUCTS: StructInfo[] = [];

/**
 * Declares a struct. Fields are laid out in order with natural alignment unless
 * they give an explicit offset (union members).
 */
export function struct<const D extends Record<string, FieldDef>>(
  name: string,
  defs: D,
  opts: { size?: number; cType?: string; header?: Header } = {},
): Struct<D> {
  const fields: Field[] = [];
  let cursor = 0;
  let align = 1;
  for (const [fname, def] of Object.entries(defs)) {
    const d = typeof def === 'string' ? { type: def } : def;
    const es = SCALAR_SIZE[d.type];
    const count = d.count ?? 1;
    const offset = d.at ?? Math.ceil(cursor / es) * es;
    fields.push({ name: fname, type: d.type, offset, count, cPath: d.c ?? fname });
    cursor = Math.max(cursor, offset + es * count);
    align = Math.max(align, es);
  }
  const size = opts.size ?? Math.ceil(cursor / align) * align;
  const offsetOf = Object.fromEntries(fields.map((f) => [f.name, f.offset])) as { [K in keyof D]: number };
  const View = makeViewClass(fields, size);
  const view = (buf: Uint8Array = new Uint8Array(size), byteOffset = 0) => {
    if (buf.byteLength - byteOffset < size) {
      throw new RangeError(`${name}: buffer of ${buf.byteLength - byteOffset} bytes is smaller than ${size}`);
    }
    return new View(buf, byteOffset) as unknown as StructView<D>;
  };
  const s: Struct<D> = {
    name,
    size,
    align,
    fields,
    offsetOf,
    cType: opts.cType ?? `struct ${name}`,
    header: opts.header ?? 'uapi',
    view,
    decode: (buf, byteOffset = 0) => view(buf, byteOffset).toObject(),
  };
  STRUCTS.push(s);
  return s;
}

interface ViewBase {
  dv: DataView;
  off: number;
  bytes: Uint8Array;
}

// One class per struct, with accessors on its prototype: V8 keeps them monomorphic
// and a bound view costs one small object, made once and reused by its owner.
function makeViewClass(fields: readonly Field[], size: number) {
  const lengthField = fields.find((f) => f.offset === 0 && (f.name === 'size' || f.name === 'argsz'));
  class View implements ViewBase {
    dv: DataView;
    off: number;
    bytes: Uint8Array;
    constructor(buf: Uint8Array, byteOffset: number) {
      this.bytes = buf.subarray(byteOffset, byteOffset + size);
      this.dv = new DataView(buf.buffer, buf.byteOffset + byteOffset, size);
      this.off = 0;
    }
    reset() {
      this.bytes.fill(0);
      if (lengthField) this.dv.setUint32(0, size, true);
      return this;
    }
    toObject() {
      const o: Record<string, number | bigint> = {};
      for (const f of fields)
        if (f.count === 1) o[f.name] = (this as unknown as Record<string, number | bigint>)[f.name]!;
      return o;
    }
  }
  for (const f of fields) {
    if (f.count !== 1) continue;
    const o = f.offset;
    let get: (this: ViewBase) => number | bigint;
    let set: (this: ViewBase, v: number | bigint) => void;
    switch (f.type) {
      case 'u8':
        get = function () {
          return this.dv.getUint8(o);
        };
        set = function (v) {
          this.dv.setUint8(o, Number(v));
        };
        break;
      case 'u16':
        get = function () {
          return this.dv.getUint16(o, true);
        };
        set = function (v) {
          this.dv.setUint16(o, Number(v), true);
        };
        break;
      case 'u32':
        get = function () {
          return this.dv.getUint32(o, true);
        };
        set = function (v) {
          this.dv.setUint32(o, Number(v), true);
        };
        break;
      case 's32':
        get = function () {
          return this.dv.getInt32(o, true);
        };
        set = function (v) {
          this.dv.setInt32(o, Number(v), true);
        };
        break;
      case 'u64':
        get = function () {
          return this.dv.getBigUint64(o, true);
        };
        set = function (v) {
          this.dv.setBigUint64(o, BigInt.asUintN(64, BigInt(v)), true);
        };
        break;
    }
    Object.defineProperty(View.prototype, f.name, { get, set, enumerable: true });
  }
  return View;
}

/** Which header declares a name: 'uapi' = linux/iommufd.h and linux/vfio.h; 'selftest' = iommufd_test.h (CONFIG_IOMMUFD_TEST). */
export type Header = 'uapi' | 'selftest';

/** Which kind of file descriptor an ioctl is issued on. */
export type FdKind = 'iommufd' | 'container' | 'group' | 'device';

/** How the third ioctl argument is passed. */
export type ArgKind =
  | { readonly kind: 'none' }
  | { readonly kind: 'value' } // an integer passed by value (CHECK_EXTENSION, SET_IOMMU)
  | { readonly kind: 'int-ptr' } // a pointer to an int (GROUP_SET_CONTAINER)
  | { readonly kind: 'string' } // a NUL-terminated string (GROUP_GET_DEVICE_FD)
  | { readonly kind: 'struct'; readonly struct: StructInfo };

/** An ioctl: its uapi name, request number, the fd it goes to and its argument. */
export interface Ioctl {
  readonly name: string;
  readonly request: number;
  readonly fd: FdKind;
  readonly arg: ArgKind;
  /** Fields of the request shown when it fails (errors name the range and ids). */
  readonly keyFields: readonly string[];
  readonly header: Header;
}

/** All declared ioctls (the golden probe walks this). */
export const IOCTLS: Ioctl[] = [];

/** `_IO(type, nr)` from <asm-generic/ioctl.h>: no size or direction bits (iommufd and VFIO use only _IO). */
export function _IO(type: number, nr: number): number {
  return (type << 8) | nr;
}

/** Declares an ioctl. */
export function ioctl(
  name: string,
  request: number,
  fd: FdKind,
  arg: StructInfo | 'none' | 'value' | 'int-ptr' | 'string',
  keyFields: readonly string[] = [],
  header: Header = 'uapi',
): Ioctl {
  const a: ArgKind = typeof arg === 'string' ? ({ kind: arg } as ArgKind) : { kind: 'struct', struct: arg };
  const def: Ioctl = { name, request, fd, arg: a, keyFields, header };
  IOCTLS.push(def);
  return def;
}

/** A named group of constants sharing a C prefix, e.g. IOMMU_IOAS_MAP_ + FIXED_IOVA. */
export interface ConstantGroup {
  readonly prefix: string;
  readonly values: Readonly<Record<string, number>>;
  readonly header: Header;
}

/** All declared constants (the golden probe walks this). */
export const CONSTANTS: ConstantGroup[] = [];

/** Declares constants whose C names are `prefix + key`; returns the values object. */
export function constants<const V extends Record<string, number>>(
  prefix: string,
  values: V,
  header: Header = 'uapi',
): V {
  CONSTANTS.push({ prefix, values, header });
  return values;
}
