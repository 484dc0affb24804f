const B = 4 << 20, N = 256;
const t = (name, fn) => { const c0 = process.cpuUsage(); fn(); const c = process.cpuUsage(c0); console.log(name, 'user', (c.user/1e6).toFixed(2), 'sys', (c.system/1e6).toFixed(2), 'per GB'); };
const one = Buffer.allocUnsafeSlow(B);
t('reuse one 4MB buffer, fill x256', () => { for (let i = 0; i < N; i++) one.fill(i); });
t('fresh 4MB buffer each, fill x256', () => { for (let i = 0; i < N; i++) Buffer.allocUnsafeSlow(B).fill(i); });
t('fresh 64KB buffers, fill x16384', () => { for (let i = 0; i < N * 64; i++) Buffer.allocUnsafeSlow(64 << 10).fill(i); });
t('reuse one 4MB buffer, fill x256 again', () => { for (let i = 0; i < N; i++) one.fill(i); });
