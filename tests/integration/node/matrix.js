// node-postgres's part of the driver matrix (tests/integration/test_driver_matrix.py runs it): one feature
// per run. node-postgres sends a query without values with the simple protocol, a query with values (or
// queryMode 'extended') with the extended protocol and the unnamed statement, a query with `name` as a
// named statement (prepared once per connection), and a query with `rows` as a portal read with Execute
// row limits (PortalSuspended, then Execute again, Sync only at the end).
//
// usage: node matrix.js '{"port":N,"user":"app","password":"app","database":"app","feature":"copy","table":"t"}'
//   feature: copy | cursor | cursor_write | prepared | write_read | listen | cancel | errors
// Prints "OK FEATURE" and exits 0, or "FAIL at step [...]: SQLSTATE message" and exits 1.
// `prepared` also prints "PORTS {"reads":[...],"writes":[...],"txReads":[...]}".
'use strict'

process.noDeprecation = true // Client.activeQuery, which Client.cancel() itself uses

const { Client } = require('pg')
const copyStreams = require('pg-copy-streams')
const { pipeline } = require('stream/promises')
const { Readable, Writable } = require('stream')

const cfg = JSON.parse(process.argv[2])
const T = cfg.table
let step = 'start'

function check(ok, what) {
  if (!ok) throw new Error('check failed: ' + what)
}

async function open() {
  const c = new Client({
    host: '127.0.0.1',
    port: cfg.port,
    user: cfg.user,
    password: cfg.password,
    database: cfg.database,
    connectionTimeoutMillis: 5000,
    query_timeout: 40000,
  })
  c.on('error', (e) => {
    console.log('client error event: ' + e.message)
  })
  await c.connect()
  return c
}

async function expectCode(code, fn) {
  try {
    await fn()
  } catch (e) {
    if (e.code !== code) throw new Error(`expected SQLSTATE ${code}, got ${e.code}: ${e.message}`)
    return
  }
  throw new Error(`expected SQLSTATE ${code}, got no error`)
}

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i)
const same = (x, y) => JSON.stringify(x) === JSON.stringify(y)
const ext = (text, values) => ({ text, values: values || [], queryMode: 'extended' })

async function copyOut(c, sql) {
  const chunks = []
  await pipeline(
    c.query(copyStreams.to(sql)),
    new Writable({
      write(chunk, _enc, cb) {
        chunks.push(chunk)
        cb()
      },
    })
  )
  return Buffer.concat(chunks).toString()
}

async function copyIn(c, sql, text) {
  await pipeline(Readable.from([Buffer.from(text)]), c.query(copyStreams.from(sql)))
}

// ---------------------------------------------------------------------------------------------------------

async function copy() {
  const c = await open()
  try {
    let data = ''
    for (let i = 1; i <= 1000; i++) data += `${i}\tr${i}\n`
    step = 'copy from stdin, 1000 rows'
    await copyIn(c, `copy ${T} (id, v) from stdin`, data)
    step = 'copy to stdout of a query'
    const out = await copyOut(c, `copy (select id, v from ${T} order by id) to stdout`)
    check(out === data, `copy out gave ${out.length} chars`)
    step = 'copy in a transaction'
    await c.query('begin')
    data = ''
    for (let i = 1001; i <= 1100; i++) data += `${i}\tr${i}\n`
    await copyIn(c, `copy ${T} (id, v) from stdin`, data)
    const n = (await c.query(`select count(*)::int as n from ${T}`)).rows[0].n
    check(n === 1100, `count in the transaction ${n}`)
    const mx = await copyOut(c, `copy (select max(id) from ${T}) to stdout`)
    check(mx === '1100\n', `copy out max gave ${mx}`)
    await c.query('commit')
    step = 'copy of text rows, then copy out of generate_series'
    await copyIn(c, `copy ${T} (id, v) from stdin`, '2001\tx\n2002\ty\n')
    const g = (await copyOut(c, 'copy (select g, g * 2 from generate_series(1, 500) g) to stdout')).split('\n')
    check(g.length === 501 && g[499] === '500\t1000', 'copy out of generate_series')
  } finally {
    await c.end()
  }
}

async function cursor() {
  const c = await open()
  try {
    await c.query('begin')
    step = 'DECLARE c (simple protocol)'
    await c.query('declare c cursor for select g from generate_series(1, 1000) g')
    step = 'FETCH 100 FROM c (extended protocol)'
    let got = (await c.query(ext('fetch 100 from c'))).rows.map((r) => r.g)
    check(same(got, range(1, 100)), `first FETCH gave ${got.length} rows`)
    step = 'FETCH 100 FROM c (named statement)'
    got = (await c.query({ name: 'fetch_c', text: 'fetch 100 from c' })).rows.map((r) => r.g)
    check(same(got, range(101, 200)), `second FETCH gave ${got.length} rows`)
    step = 'FETCH 100 FROM c (named statement again)'
    got = (await c.query({ name: 'fetch_c', text: 'fetch 100 from c' })).rows.map((r) => r.g)
    check(same(got, range(201, 300)), `third FETCH gave ${got.length} rows`)
    await c.query('close c')
    await c.query('commit')
    step = 'portal with rows: 50 (Execute row limits) in a transaction'
    await c.query('begin')
    got = (await c.query({ text: 'select g from generate_series(1, $1::int) g', values: [1000], rows: 50 })).rows.map((r) => r.g)
    check(same(got, range(1, 1000)), `portal gave ${got.length} rows`)
    await c.query('commit')
    step = 'portal with rows: 50 outside a transaction'
    got = (await c.query({ text: 'select g from generate_series(1, $1::int) g', values: [300], rows: 50 })).rows.map((r) => r.g)
    check(same(got, range(1, 300)), `portal gave ${got.length} rows`)
  } finally {
    await c.end()
  }
}

async function cursorWrite() {
  const c = await open()
  try {
    step = 'DECLARE before the transaction\'s first write, FETCH after it'
    await c.query('begin')
    await c.query('declare c2 cursor for select g from generate_series(1, 10) g')
    await c.query(`insert into ${T} values ($1, $2)`, [1, 'w'])
    const got = (await c.query(ext('fetch all from c2'))).rows.map((r) => r.g)
    check(same(got, range(1, 10)), `FETCH after the write gave ${got}`)
    await c.query('commit')
  } finally {
    await c.end()
  }
}

async function prepared() {
  const reads = [], writes = [], txReads = []
  const a = await open()
  const b = await open()
  try {
    const R = (k) => ({ name: 'r', text: 'select inet_server_port() as p, $1::int + 1 as x', values: [k] })
    const W = (id, v) => ({ name: 'w', text: `insert into ${T} (id, v) values ($1, $2) returning inet_server_port() as p`, values: [id, v] })
    const read = async (c, k, into) => {
      const row = (await c.query(R(k))).rows[0]
      check(row.x === k + 1, `read gave ${JSON.stringify(row)}`)
      into.push(row.p)
    }
    for (let k = 0; k < 6; k++) {
      step = `a: named read r, execution ${k + 1}`
      await read(a, k, reads)
    }
    // b's statement "r" is another query than a's "r"
    const Br = (s) => ({ name: 'r', text: "select $1::text || 'b' as s", values: [s] })
    for (let k = 0; k < 3; k++) {
      step = `b: its own statement r, execution ${k + 1}`
      check((await b.query(Br('x' + k))).rows[0].s === `x${k}b`, step)
    }
    step = 'a: named write w'
    writes.push((await a.query(W(1, 'w1'))).rows[0].p)
    for (let k = 0; k < 6; k++) {
      step = `a: named read r after the write, execution ${k + 1}`
      await read(a, k, reads)
    }
    step = 'a: transaction read, write, read'
    await a.query('begin')
    await read(a, 100, reads)
    writes.push((await a.query(W(2, 'w2'))).rows[0].p)
    await read(a, 101, txReads)
    await a.query('commit')
    step = 'b: transaction read, write, read'
    await b.query('begin')
    check((await b.query(Br('z'))).rows[0].s === 'zb', step)
    writes.push((await b.query(W(3, 'w3'))).rows[0].p)
    const row = (await b.query({ name: 'r2', text: 'select inet_server_port() as p, $1::int + 1 as x', values: [102] })).rows[0]
    check(row.x === 103, 'b read')
    txReads.push(row.p)
    await b.query('commit')
    for (let k = 0; k < 3; k++) {
      step = `a and b at the end, ${k + 1}`
      await read(a, k, reads)
      check((await b.query(Br('e' + k))).rows[0].s === `e${k}b`, step)
    }
  } finally {
    await a.end()
    await b.end()
  }
  console.log('PORTS ' + JSON.stringify({ reads, writes, txReads }))
}

// WRITERS clients at once, client j on ids j*1000 + ...: in transaction mode they share backend
// connections, and with them the names of each other's statements (w, r, u, n).
const WRITERS = 3

async function writeReadClient(j) {
  const off = j * 1000
  const c = await open()
  let at = 'connect'
  try {
    const W = (id, v) => ({ name: 'w', text: `insert into ${T} (id, v) values ($1, $2)`, values: [id, v] })
    const R = (id) => ({ name: 'r', text: `select v from ${T} where id = $1`, values: [id] })
    const U = (v, id) => ({ name: 'u', text: `update ${T} set v = $1 where id = $2`, values: [v, id] })
    const N = { name: 'n', text: `select count(*)::int as n from ${T} where id between $1 and $2`, values: [off, off + 999] }
    const v = async (id) => {
      const rows = (await c.query(R(id))).rows
      return rows.length ? rows[0].v : null
    }
    for (let k = 1; k <= 12; k++) {
      const it = `iteration ${k}: `
      at = it + 'write'
      await c.query(W(off + k, 'a' + k))
      at = it + 'read after the write (next transaction)'
      let got = await v(off + k)
      check(got === 'a' + k, `${at} gave ${got}`)
      at = it + 'transaction 1 (writes first)'
      await c.query('begin')
      await c.query(W(off + 100 + k, 'b' + k))
      got = await v(off + 100 + k)
      check(got === 'b' + k, `${at}: read after the write gave ${got}`)
      await c.query(U('u' + k, off + 100 + k))
      got = await v(off + 100 + k)
      check(got === 'u' + k, `${at}: read after the update gave ${got}`)
      await c.query('commit')
      at = it + 'transaction 2 (reads first)'
      await c.query('begin')
      const n = (await c.query(N)).rows[0].n
      check(n === 3 * k - 1, `${at}: count ${n}`)
      await c.query(W(off + 200 + k, 'c' + k))
      got = await v(off + 200 + k)
      check(got === 'c' + k, `${at}: read after the write gave ${got}`)
      await c.query('commit')
    }
  } catch (e) {
    throw new Error(`client ${j} at [${at}]: ${e.code ? e.code + ' ' : ''}${e.message}`)
  } finally {
    await c.end()
  }
}

async function writeRead() {
  step = `${WRITERS} concurrent clients`
  const results = await Promise.allSettled(Array.from({ length: WRITERS }, (_, j) => writeReadClient(j)))
  const errs = results.filter((r) => r.status === 'rejected').map((r) => r.reason.message)
  check(errs.length === 0, `${errs.length} of ${WRITERS} clients failed:\n  ` + errs.join('\n  '))
}

function waitFor(pred, ms, what) {
  return new Promise((resolve, reject) => {
    const t0 = Date.now()
    const tick = () => {
      if (pred()) return resolve()
      if (Date.now() - t0 > ms) return reject(new Error(`${what} within ${ms} ms`))
      setTimeout(tick, 20)
    }
    tick()
  })
}

async function listen() {
  const ch = 'ch_' + T
  const got = []
  const L = await open()
  const N = await open()
  try {
    L.on('notification', (m) => got.push(`${m.channel}:${m.payload}`))
    step = 'LISTEN'
    await L.query(`listen ${ch}`)
    check((await L.query('select 41 + 1 as x')).rows[0].x === 42, 'select after LISTEN')
    step = 'NOTIFY from another connection'
    await N.query(`notify ${ch}, 'one'`)
    await waitFor(() => got.length >= 1, 10000, 'first notification not delivered')
    step = 'pg_notify in a transaction'
    await N.query('begin')
    await N.query('select pg_notify($1, $2)', [ch, 'two'])
    await N.query('commit')
    await waitFor(() => got.length >= 2, 10000, 'second notification not delivered')
    check(same(got, [`${ch}:one`, `${ch}:two`]), `notifications ${got}`)
    step = 'UNLISTEN *'
    await L.query('unlisten *')
    check((await L.query('select $1::int as x', [7])).rows[0].x === 7, 'select after UNLISTEN')
  } finally {
    await L.end()
    await N.end()
  }
}

// Wait until a statement containing tag runs on some node (pg_stat_activity over direct superuser
// connections): PostgreSQL itself drops a cancel that arrives before the statement started.
async function waitActive(tag, ms) {
  const direct = []
  try {
    for (const port of cfg.nodes) {
      const d = new Client({ host: '127.0.0.1', port, user: 'postgres', password: 'postgres', database: 'postgres', connectionTimeoutMillis: 5000 })
      await d.connect()
      direct.push(d)
    }
    const t0 = Date.now()
    for (;;) {
      for (const d of direct) {
        const r = await d.query("select count(*)::int as n from pg_stat_activity where state = 'active' and pid <> pg_backend_pid() and strpos(query, $1) > 0", [tag])
        if (r.rows[0].n > 0) return
      }
      if (Date.now() - t0 > ms) throw new Error(`the statement tagged ${tag} never ran within ${ms} ms`)
      await new Promise((res) => setTimeout(res, 50))
    }
  } finally {
    for (const d of direct) await d.end()
  }
}

// node-postgres's cancel: a second Client object sends a CancelRequest with the first one's key.
async function cancelled(c, text, values, tag) {
  const q = c.query(values ? { text: `${text} /* ${tag} */`, values } : { text: `${text} /* ${tag} */` })
  const t0 = Date.now()
  const outcome = expectCode('57014', () => q)
  outcome.catch(() => {}) // awaited below; no unhandled rejection if waitActive throws first
  await waitActive(tag, 10000)
  // PostgreSQL drops a cancel that arrives while the backend still reads the statement's
  // messages (it shows as active from its Parse on): cancel again every 500 ms until it ends.
  let settled = false
  outcome.then(() => { settled = true }, () => { settled = true })
  for (let k = 0; k < 20 && !settled; k++) {
    const canceller = new Client({ host: '127.0.0.1', port: cfg.port })
    canceller.connection.on('error', () => {}) // the server closes the cancel connection
    canceller.cancel(c, c.activeQuery) // (cancel() itself reads the deprecated activeQuery too)
    await Promise.race([outcome.catch(() => {}), new Promise((res) => setTimeout(res, 500))])
  }
  await outcome
  check(Date.now() - t0 < 15000, `${text} was not cancelled in time`)
  // A repeated cancel still on its way would hit the next statement (the server signals the
  // backend after the statement ended, as with PostgreSQL reached directly): let it land while
  // the backend is idle, where it is ignored.
  await new Promise((res) => setTimeout(res, 1000))
}

async function cancel() {
  const c = await open()
  try {
    step = 'cancel of pg_sleep(30) (simple protocol)'
    await cancelled(c, 'select pg_sleep(30)', null, `dm-cancel-${T}-0`)
    check((await c.query('select 1 as x')).rows[0].x === 1, 'select after the cancel')
    step = 'cancel of pg_sleep($1) (extended protocol)'
    await cancelled(c, 'select pg_sleep($1)', [30], `dm-cancel-${T}-1`)
    check((await c.query('select 1 as x')).rows[0].x === 1, 'select after the cancel')
    step = 'cancel of a long read in a transaction'
    await c.query('begin')
    check((await c.query('select 2 as x')).rows[0].x === 2, 'select 2')
    await cancelled(c, 'select count(*) from generate_series(1, 3000000000)', null, `dm-cancel-${T}-2`)
    await c.query('rollback')
    check((await c.query('select $1::int as x', [3])).rows[0].x === 3, 'select after the rollback')
  } finally {
    await c.end()
  }
}

async function errors() {
  const c = await open()
  try {
    step = 'division by zero in a transaction'
    await c.query('begin')
    check((await c.query('select 1 as x')).rows[0].x === 1, 'select 1')
    await expectCode('22012', () => c.query('select 1 / $1::int', [0]))
    step = 'the next statement in the failed transaction'
    await expectCode('25P02', () => c.query('select 1'))
    await c.query('rollback')
    check((await c.query('select 2 as x')).rows[0].x === 2, 'select after the rollback')
    step = 'unique violation after a write'
    await c.query('begin')
    await c.query(`insert into ${T} values (1, 'gone')`)
    await expectCode('23505', () => c.query(`insert into ${T} values ($1, $2)`, [1, 'dup']))
    await c.query('rollback')
    check((await c.query(`select count(*)::int as n from ${T} where id = 1`)).rows[0].n === 0, 'rolled-back row visible')
    step = 'savepoint'
    await c.query('begin')
    await c.query(`insert into ${T} values (2, 's2')`)
    await c.query('savepoint s')
    await expectCode('22012', () => c.query('select 1 / 0'))
    await c.query('rollback to savepoint s')
    await c.query(`insert into ${T} values ($1, $2)`, [3, 's3'])
    await c.query('commit')
    step = 'named statement failing in a transaction'
    await c.query('begin')
    await expectCode('22012', () => c.query({ name: 'div', text: 'select 10 / $1::int as x', values: [0] }))
    await c.query('rollback')
    check((await c.query({ name: 'div', text: 'select 10 / $1::int as x', values: [2] })).rows[0].x === 5, 'div after rollback')
    step = 'syntax error outside a transaction'
    await expectCode('42601', () => c.query('selec 1'))
    await c.query(`insert into ${T} values ($1, $2)`, [10, 'ok'])
    check((await c.query(`select v from ${T} where id = $1`, [10])).rows[0].v === 'ok', 'row 10')
  } finally {
    await c.end()
  }
}

const FEATURES = { copy, cursor, cursor_write: cursorWrite, prepared, write_read: writeRead, listen, cancel, errors }

async function main() {
  const f = FEATURES[cfg.feature]
  if (!f) {
    console.error('unknown feature ' + cfg.feature)
    process.exit(2)
  }
  const watchdog = setTimeout(() => {
    console.log(`FAIL ${cfg.feature} at step [${step}]: no progress within 60 s`)
    process.exit(3)
  }, 60000)
  try {
    await f()
  } catch (e) {
    console.log(`FAIL ${cfg.feature} at step [${step}]: ${e.code ? e.code + ' ' : ''}${e.message}`)
    process.exit(1)
  }
  clearTimeout(watchdog)
  console.log('OK ' + cfg.feature)
  process.exit(0)
}

main()
