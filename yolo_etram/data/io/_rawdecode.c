/* The compiled loops of yolo_etram.data.io.raw: EVT 2.0 / 2.1 / 3.0 decoding, one pass over the words.
 *
 * Why compiled: the vectorised numpy decoder (raw.py, kept as the fallback and as the reference these loops are tested
 * against) decodes EVT 3.0 at 3-15 M events/s, the fastest exact PyPI reader at 35-58; these loops run at a few hundred.
 * Rules: OpenEB 5.1.1's standalone decoders (EVT 2.0, 3.0) and HAL decoder (EVT 2.1), see raw.py.
 *
 * Each decoder takes the words (a buffer), the decoder state (seen_time_high, time_high, n_loop, t, y, base_x, pol)
 * the sensor size and, when given, output buffers x (uint16), y (uint16), p (uint8), t (int64) with room for every
 * event. Without outputs it only counts (the scan). It returns (n_events, n_triggers, n_outside_the_sensor,
 * t_first or -1, t_max or -1, new state).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef struct {
    int seen;
    long long time_high, n_loop, t, y, base_x, pol;
} State;

typedef struct {
    uint16_t *x, *y;
    uint8_t *p;
    int64_t *t;
    Py_ssize_t n, trig, outside, undefined; /* events, triggers, events outside the sensor, undefined words */
    long long t_first, t_max, width, height;
} Out;

static inline void emit(Out *o, long long x, long long y, long long p, long long t) {
    if (o->x) {
        o->x[o->n] = (uint16_t)x;
        o->y[o->n] = (uint16_t)y;
        o->p[o->n] = (uint8_t)p;
        o->t[o->n] = t;
    }
    if (o->n == 0) o->t_first = t;
    if (t > o->t_max) o->t_max = t;
    if ((uint16_t)x >= o->width || (uint16_t)y >= o->height) o->outside++;
    o->n++;
}

static inline void count(Out *o, unsigned m, long long base_x, long long y, long long t) {
    int k = __builtin_popcount(m);
    if (o->n == 0) o->t_first = t;
    if (t > o->t_max) o->t_max = t;
    if (y >= o->height) {
        o->outside += k;
    } else {
        long long inside = o->width - base_x; /* bits b >= inside are columns beyond the sensor */
        if (inside <= 0) o->outside += k;
        else if (inside < 32) o->outside += __builtin_popcount(m >> inside);
    }
    o->n += k;
}

/* EVT 3.0 into the outputs, with the hot state in locals; returns the events written, or -1 when ``cap`` would be
 * exceeded (the caller counts first and retries with exact room). */
static Py_ssize_t evt3_decode(const uint16_t *w, Py_ssize_t n, State *s, Out *o, Py_ssize_t cap) {
    long long th = s->time_high, loop = s->n_loop, t = s->t, y = s->y, bx = s->base_x, pol = s->pol;
    long long t_max = o->t_max;
    uint16_t *X = o->x, *Y = o->y;
    uint8_t *P = o->p;
    int64_t *T = o->t;
    Py_ssize_t k = 0, trig = 0, i = 0;
    if (!s->seen) {
        while (i < n && (w[i] >> 12) != 0x8) i++;
        if (i == n) return 0;
        s->seen = 1;
        th = w[i] & 0xFFF;
        t = (th << 12) + (loop << 24);
    }
    for (; i < n; i++) {
        unsigned v = w[i], pay = v & 0xFFF, m;
        switch (v >> 12) {
        case 0x0: y = pay & 0x7FF; break;
        case 0x2:
            if (k >= cap) return -1;
            X[k] = pay & 0x7FF; Y[k] = (uint16_t)y; P[k] = pay >> 11; T[k] = t; k++;
            if (t > t_max) t_max = t;
            break;
        case 0x3: bx = pay & 0x7FF; pol = pay >> 11; break;
        case 0x4:
        case 0x5:
            m = (v >> 12) == 0x4 ? pay : pay & 0xFF;
            if (k + 12 > cap) return -1;
            if (m && t > t_max) t_max = t;
            while (m) {
                int b = __builtin_ctz(m);
                m &= m - 1;
                X[k] = (uint16_t)(bx + b); Y[k] = (uint16_t)y; P[k] = (uint8_t)pol; T[k] = t; k++;
            }
            bx = (uint16_t)(bx + ((v >> 12) == 0x4 ? 12 : 8));
            break;
        case 0x6: t = (th << 12) + (loop << 24) + pay; break;
        case 0x8:
            if (th - (long long)pay >= 4085) loop++; /* OpenEB: a drop of >= 4095-10 units loops */
            th = pay;
            t = (th << 12) + (loop << 24);
            break;
        case 0xA: trig++; break;
        default: break;
        }
    }
    s->time_high = th; s->n_loop = loop; s->t = t; s->y = y; s->base_x = bx; s->pol = pol;
    if (k && o->n == 0) o->t_first = T[0];
    o->t_max = t_max; o->n = k; o->trig = trig;
    return k;
}

/* EVT 3.0 counting (the scan): events, their time span and how many fall outside the sensor, nothing stored. */
static void evt3_count(const uint16_t *w, Py_ssize_t n, State *s, Out *o) {
    long long th = s->time_high, loop = s->n_loop, t = s->t, y = s->y, bx = s->base_x, pol = s->pol;
    Py_ssize_t i = 0;
    if (!s->seen) {
        while (i < n && (w[i] >> 12) != 0x8) i++;
        if (i == n) return;
        s->seen = 1;
        th = w[i] & 0xFFF;
        t = (th << 12) + (loop << 24);
    }
    for (; i < n; i++) {
        unsigned v = w[i], pay = v & 0xFFF, m;
        switch (v >> 12) {
        case 0x0: y = pay & 0x7FF; break;
        case 0x2: count(o, 1, pay & 0x7FF, y, t); break;
        case 0x3: bx = pay & 0x7FF; pol = pay >> 11; break;
        case 0x4:
        case 0x5:
            m = (v >> 12) == 0x4 ? pay : pay & 0xFF;
            if (m) count(o, m, bx, y, t);
            bx = (uint16_t)(bx + ((v >> 12) == 0x4 ? 12 : 8));
            break;
        case 0x6: t = (th << 12) + (loop << 24) + pay; break;
        case 0x8:
            if (th - (long long)pay >= 4085) loop++;
            th = pay;
            t = (th << 12) + (loop << 24);
            break;
        case 0xA: o->trig++; break;
        case 0x1: case 0x9: case 0xB: case 0xC: o->undefined++; break; /* no EVT 3.0 word has these types */
        default: break;
        }
    }
    s->time_high = th; s->n_loop = loop; s->t = t; s->y = y; s->base_x = bx; s->pol = pol;
}

static void evt2(const uint32_t *w, Py_ssize_t n, State *s, Out *o) {
    long long th = s->time_high, loop = s->n_loop, base = s->t, t_max = o->t_max;
    uint16_t *X = o->x, *Y = o->y;
    uint8_t *P = o->p;
    int64_t *T = o->t;
    Py_ssize_t i = 0, k = 0;
    if (!s->seen) {
        while (i < n && (w[i] >> 28) != 0x8) i++;
        if (i == n) return;
        s->seen = 1;
        th = w[i] & 0x0FFFFFFF;
        base = (th << 6) + (loop << 34);
    }
    for (; i < n; i++) {
        uint32_t v = w[i];
        unsigned type = v >> 28;
        if (type <= 1) {
            long long t = base + ((v >> 22) & 0x3F);
            if (X) {
                X[k] = (v >> 11) & 0x7FF; Y[k] = v & 0x7FF; P[k] = (uint8_t)type; T[k] = t;
                if (k == 0 && o->n == 0) o->t_first = t;
                k++;
                if (t > t_max) t_max = t;
            } else {
                count(o, 1, (v >> 11) & 0x7FF, v & 0x7FF, t);
            }
        } else if (type == 0x8) {
            long long new_th = v & 0x0FFFFFFF;
            if (th - new_th >= (1 << 28) - 1 - 10) loop++; /* base drop >= ((2^28-1)<<6) - 640 us */
            th = new_th;
            base = (th << 6) + (loop << 34);
        } else if (type == 0xA) {
            o->trig++;
        } else if ((type >= 2 && type <= 7) || type == 9) {
            o->undefined++; /* no EVT 2.0 word has these types */
        }
    }
    s->time_high = th; s->n_loop = loop; s->t = base;
    if (X) { o->n += k; o->t_max = t_max; }
}

static void evt21(const uint64_t *w, Py_ssize_t n, State *s, Out *o, int legacy) {
    Py_ssize_t i = 0;
#define WORD(k) (legacy ? ((w[k] << 32) | (w[k] >> 32)) : w[k])
    if (!s->seen) {
        while (i < n && (WORD(i) >> 60) != 0x8) i++;
        if (i == n) return;
        s->seen = 1;
        s->time_high = (WORD(i) >> 32) & 0x0FFFFFFF;
        s->t = (s->time_high << 6) + (s->n_loop << 34);
    }
    for (; i < n; i++) {
        uint64_t v = WORD(i);
        unsigned type = (unsigned)(v >> 60);
        uint32_t hi = (uint32_t)(v >> 32), mask = (uint32_t)v;
        if (type <= 1) {
            long long t = s->t + ((hi >> 22) & 0x3F), x = (hi >> 11) & 0x7FF, y = hi & 0x7FF;
            if (!o->x) {
                if (mask) count(o, mask, x, y, t);
                continue;
            }
            while (mask) {
                int b = __builtin_ctz(mask);
                mask &= mask - 1;
                emit(o, (uint16_t)(x + b), y, type, t);
            }
        } else if (type == 0x8) {
            int64_t th = hi & 0x0FFFFFFF;
            if (s->time_high - th >= (1 << 28) - 1) s->n_loop++; /* the HAL: only the exact wrap from the maximum */
            s->time_high = th;
            s->t = (th << 6) + (s->n_loop << 34);
        } else if (type == 0xA) {
            o->trig++;
        } else if (type != 0xE && type != 0xF) {
            o->undefined++; /* no EVT 2.1 word has these types */
        }
    }
#undef WORD
}

static PyObject *decode(PyObject *self, PyObject *args) {
    int evt, legacy;
    long long width, height;
    Py_buffer words, bx = {0}, by = {0}, bp = {0}, bt = {0};
    State s;
    PyObject *ox, *oy, *op, *ot;
    if (!PyArg_ParseTuple(args, "iiy*(iLLLLLL)LLOOOO", &evt, &legacy, &words, &s.seen, &s.time_high, &s.n_loop, &s.t,
                          &s.y, &s.base_x, &s.pol, &width, &height, &ox, &oy, &op, &ot))
        return NULL;
    Out o = {NULL, NULL, NULL, NULL, 0, 0, 0, 0, -1, -1, width, height};
    int with_out = ox != Py_None;
    if (with_out) {
        if (PyObject_GetBuffer(ox, &bx, PyBUF_WRITABLE) || PyObject_GetBuffer(oy, &by, PyBUF_WRITABLE) ||
            PyObject_GetBuffer(op, &bp, PyBUF_WRITABLE) || PyObject_GetBuffer(ot, &bt, PyBUF_WRITABLE)) {
            PyBuffer_Release(&words);
            if (bx.obj) PyBuffer_Release(&bx);
            if (by.obj) PyBuffer_Release(&by);
            if (bp.obj) PyBuffer_Release(&bp);
            return NULL;
        }
        o.x = bx.buf; o.y = by.buf; o.p = bp.buf; o.t = bt.buf;
    }
    Py_ssize_t cap = with_out ? bx.len / 2 : 0, done = 0;
    Py_BEGIN_ALLOW_THREADS
    if (evt == 3 && with_out) done = evt3_decode(words.buf, words.len / 2, &s, &o, cap);
    else if (evt == 3) evt3_count(words.buf, words.len / 2, &s, &o);
    else if (evt == 2) evt2(words.buf, words.len / 4, &s, &o);
    else evt21(words.buf, words.len / 8, &s, &o, legacy);
    Py_END_ALLOW_THREADS
    if (done < 0) o.n = -1; /* too little room: count, then decode again */
    PyBuffer_Release(&words);
    if (with_out) {
        PyBuffer_Release(&bx); PyBuffer_Release(&by); PyBuffer_Release(&bp); PyBuffer_Release(&bt);
    }
    return Py_BuildValue("nnnnLL(iLLLLLL)", o.n, o.trig, o.outside, o.undefined, o.t_first, o.t_max, s.seen,
                         s.time_high, s.n_loop, s.t, s.y, s.base_x, s.pol);
}

static PyMethodDef methods[] = {
    {"decode", decode, METH_VARARGS,
     "decode(evt, legacy, words, state, width, height, x, y, p, t) -> (n, n_triggers, n_outside, n_undefined, "
     "t_first, t_max, state); x, y, p, t None: count only (n_outside and n_undefined are counted then only)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_rawdecode", "Compiled EVT 2.0/2.1/3.0 decoding loops.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__rawdecode(void) { return PyModule_Create(&module); }
