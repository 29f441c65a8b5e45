// Check an Iris webhook's X-Iris-Signature (docs/jobs.md).
//
//   node verify.js SECRET "$X_IRIS_SIGNATURE" < raw-body
//
// Exit status 0: valid and at most five minutes old; 1: not.
const crypto = require('crypto');

function verify(secret, header, body, toleranceSecs = 300) {
  const parts = Object.fromEntries(header.split(',').map((p) => p.split('=', 2)));
  const t = Number(parts.t);
  if (!Number.isInteger(t) || Math.abs(Date.now() / 1000 - t) > toleranceSecs) return false;
  const expected = crypto.createHmac('sha256', secret).update(`${t}.`).update(body).digest();
  const given = Buffer.from(parts.v1 || '', 'hex');
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

module.exports = { verify };

if (require.main === module) {
  const chunks = [];
  process.stdin.on('data', (c) => chunks.push(c));
  process.stdin.on('end', () => {
    process.exit(verify(process.argv[2], process.argv[3], Buffer.concat(chunks)) ? 0 : 1);
  });
}
