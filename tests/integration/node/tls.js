// node-postgres over TLS for tests/integration/test_tls.py: connects with
// ssl: { ca, rejectUnauthorized: true } (plus a client certificate and SCRAM-SHA-256-PLUS when asked),
// runs a query with a parameter and one with a 3 MB parameter, and prints "OK".
//
// usage: node tls.js '{"port":N,"user":"app","password":"app","database":"app","ca":"/path/root.crt",
//                      "cert":null,"key":null,"channelBinding":false}'
// Prints "OK" and exits 0, or "FAIL SQLSTATE-or-code message" and exits 1.
'use strict'

const fs = require('fs')
const { Client } = require('pg')

const cfg = JSON.parse(process.argv[2])

async function main() {
  const ssl = { ca: fs.readFileSync(cfg.ca), rejectUnauthorized: true }
  if (cfg.cert) {
    ssl.cert = fs.readFileSync(cfg.cert)
    ssl.key = fs.readFileSync(cfg.key)
  }
  const c = new Client({
    host: '127.0.0.1',
    port: cfg.port,
    user: cfg.user,
    password: cfg.password,
    database: cfg.database,
    ssl,
    enableChannelBinding: Boolean(cfg.channelBinding),
    connectionTimeoutMillis: 5000,
    query_timeout: 30000,
  })
  c.on('error', (e) => {
    console.log('client error event: ' + e.message)
  })
  await c.connect()
  try {
    const r = await c.query('select current_user as u, $1::int + 1 as n', [41])
    if (r.rows[0].u !== cfg.user || r.rows[0].n !== 42) {
      throw new Error('wrong result ' + JSON.stringify(r.rows))
    }
    const big = 'x'.repeat(3 * 1024 * 1024)
    const r2 = await c.query('select length($1::text) as n', [big])
    if (r2.rows[0].n !== big.length) throw new Error('wrong length ' + JSON.stringify(r2.rows))
    const tls = c.connection.stream.encrypted === true
    if (!tls) throw new Error('the connection is not encrypted')
  } finally {
    await c.end()
  }
  console.log('OK')
}

main().catch((e) => {
  console.log('FAIL ' + (e.code || '') + ' ' + e.message)
  process.exit(1)
})
