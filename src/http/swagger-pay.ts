/**
 * "Pay from Swagger UI": a small script and style sheet added to the Swagger UI page at /docs
 * (through @fastify/swagger-ui's `theme`, served from this origin, so the CSP of
 * http/protection.ts admits them: no inline script, no event-handler attributes).
 *
 * Swagger UI's try-it-out sends its requests with `window.fetch`. The script wraps it: when a
 * request to this origin is answered 402 with an x402 v2 `PAYMENT-REQUIRED` challenge (and did not
 * already carry a payment), it shows a payment panel with the amount in USDC, the wallet it goes
 * to and the chain. The person picks how to pay and confirms; the script then sends the same request
 * once more with a `PAYMENT-SIGNATURE` header, and Swagger UI shows that answer as usual
 * (cancelling shows the 402). Two ways to sign:
 *
 * - dev mode (embedded anvil chain): a demo wallet, listed by GET /dev/x402/wallets and signed by
 *   POST /dev/x402/sign (routes/dev-x402.ts, registered only beside the dev faucet);
 * - any mode: an injected browser wallet (EIP-1193 `window.ethereum`): `eth_requestAccounts`, then
 *   `eth_signTypedData_v4` of the EIP-3009 TransferWithAuthorization the challenge asks for
 *   (domain name/version from `accepts[i].extra`, chain id from the CAIP-2 network, verifying
 *   contract = the asset), sent as the x402 v2 payment payload
 *   `{x402Version: 2, resource, accepted, payload: {authorization, signature}}`, base64 JSON: the
 *   shape @x402/evm's exact client scheme builds and @x402/core/http encodes.
 *
 * The browser code is plain ES2020 kept as text here (the build compiles src/ only to dist/, so a
 * separate .js asset would not ship); test/http/swagger-pay-browser.test.ts runs it in Chromium.
 */

const script = String.raw`/* task-escrow: pay x402 challenges from Swagger UI's try-it-out (src/http/swagger-pay.ts). */
(function () {
  'use strict';
  if (window.__taskEscrowPay) return;
  window.__taskEscrowPay = { ready: true };
  var originalFetch = window.fetch.bind(window);
  var CHAINS = { 8453: 'Base', 84532: 'Base Sepolia' };
  var networkInfo = null;
  var openPanel = null;

  function decodeBase64Json(text) {
    var binary = atob(text);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  function encodeBase64Json(value) {
    var bytes = new TextEncoder().encode(JSON.stringify(value));
    var binary = '';
    for (var i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]);
    return btoa(binary);
  }

  function apiUrl(path) {
    return new URL(path, window.location.origin).href;
  }

  function requestUrl(input) {
    try {
      var raw = typeof input === 'string' ? input : input instanceof URL ? input.href : input && input.url;
      return new URL(raw, window.location.href);
    } catch (e) {
      return null;
    }
  }

  function requestHeaders(input, init) {
    if (init && init.headers) return new Headers(init.headers);
    if (typeof Request !== 'undefined' && input instanceof Request) return new Headers(input.headers);
    return new Headers();
  }

  function formatUnits(amount, decimals) {
    var digits = BigInt(amount).toString();
    if (!decimals) return digits;
    while (digits.length <= decimals) digits = '0' + digits;
    var whole = digits.slice(0, digits.length - decimals);
    var fraction = digits.slice(digits.length - decimals).replace(/0+$/, '');
    return fraction ? whole + '.' + fraction : whole;
  }

  function shortAddress(address) {
    return String(address).slice(0, 6) + '…' + String(address).slice(-4);
  }

  function chainIdOf(network) {
    var match = /^eip155:(\d+)$/.exec(String(network));
    return match ? Number(match[1]) : null;
  }

  function errorMessage(err) {
    if (!err) return 'Unknown error';
    if (typeof err === 'string') return err;
    return err.message || String(err);
  }

  async function network() {
    if (networkInfo) return networkInfo;
    try {
      var res = await originalFetch(apiUrl('/v1/network'), { headers: { accept: 'application/json' } });
      if (res.ok) networkInfo = await res.json();
    } catch (e) {
      /* shown without the token's decimals */
    }
    return networkInfo;
  }

  /** Demo wallets of the embedded dev chain, or null where the dev signer does not exist (production). */
  async function demoWallets(info) {
    if (info && info.dev_chain === false) return null; // a real chain: no dev signer to ask
    try {
      var res = await originalFetch(apiUrl('/dev/x402/wallets'), { headers: { accept: 'application/json' } });
      if (!res.ok) return null;
      var body = await res.json();
      return Array.isArray(body.wallets) && body.wallets.length ? body.wallets : null;
    } catch (e) {
      return null;
    }
  }

  function price(accepted, info) {
    var usdc = info && info.usdc;
    if (usdc && String(usdc.address).toLowerCase() === String(accepted.asset).toLowerCase()) {
      return { text: formatUnits(accepted.amount, usdc.decimals) + ' USDC', usdc: true };
    }
    return { text: String(accepted.amount) + ' atomic units of ' + accepted.asset, usdc: false };
  }

  async function signWithDemoWallet(index, accepted, resource) {
    var res = await originalFetch(apiUrl('/dev/x402/sign'), {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ wallet: index, accepted: accepted, resource: resource }),
    });
    var body = null;
    try {
      body = await res.json();
    } catch (e) {
      body = null;
    }
    if (!res.ok) throw new Error(body && body.error ? body.error.message : 'The dev signer answered ' + res.status);
    return { header: body.payment_signature, payer: body.payer };
  }

  function browserWallet() {
    var eth = window.ethereum;
    return eth && typeof eth.request === 'function' ? eth : null;
  }

  async function connectBrowserWallet() {
    var eth = browserWallet();
    if (!eth) throw new Error('No browser wallet (EIP-1193 window.ethereum) in this page');
    var accounts = await eth.request({ method: 'eth_requestAccounts' });
    if (!accounts || !accounts[0]) throw new Error('The wallet shared no account');
    return String(accounts[0]);
  }

  function randomNonce() {
    var bytes = crypto.getRandomValues(new Uint8Array(32));
    return '0x' + Array.prototype.map.call(bytes, function (b) { return b.toString(16).padStart(2, '0'); }).join('');
  }

  /** The EIP-3009 authorization the exact scheme pays with, signed by the browser wallet (eth_signTypedData_v4). */
  async function signWithBrowserWallet(from, accepted, resource) {
    var eth = browserWallet();
    if (!eth) throw new Error('No browser wallet (EIP-1193 window.ethereum) in this page');
    var chainId = chainIdOf(accepted.network);
    if (chainId === null) throw new Error('Only EVM networks (eip155:…) can be paid from a browser wallet, not ' + accepted.network);
    if (!accepted.extra || !accepted.extra.name || !accepted.extra.version) throw new Error('The challenge names no EIP-712 domain (extra.name, extra.version)');
    var current = null;
    try {
      current = await eth.request({ method: 'eth_chainId' });
    } catch (e) {
      current = null;
    }
    if (current !== null && Number(current) !== chainId) {
      try {
        await eth.request({ method: 'wallet_switchEthereumChain', params: [{ chainId: '0x' + chainId.toString(16) }] });
      } catch (e) {
        throw new Error('Switch the wallet to chain ' + chainId + ' (' + (CHAINS[chainId] || accepted.network) + ') and pay again');
      }
    }
    var now = Math.floor(Date.now() / 1000);
    var authorization = {
      from: from,
      to: accepted.payTo,
      value: String(accepted.amount),
      validAfter: '0',
      validBefore: String(now + Number(accepted.maxTimeoutSeconds)),
      nonce: randomNonce(),
    };
    var typedData = {
      types: {
        EIP712Domain: [
          { name: 'name', type: 'string' },
          { name: 'version', type: 'string' },
          { name: 'chainId', type: 'uint256' },
          { name: 'verifyingContract', type: 'address' },
        ],
        TransferWithAuthorization: [
          { name: 'from', type: 'address' },
          { name: 'to', type: 'address' },
          { name: 'value', type: 'uint256' },
          { name: 'validAfter', type: 'uint256' },
          { name: 'validBefore', type: 'uint256' },
          { name: 'nonce', type: 'bytes32' },
        ],
      },
      primaryType: 'TransferWithAuthorization',
      domain: { name: accepted.extra.name, version: accepted.extra.version, chainId: chainId, verifyingContract: accepted.asset },
      message: authorization,
    };
    var signature = await eth.request({ method: 'eth_signTypedData_v4', params: [from, JSON.stringify(typedData)] });
    if (typeof signature !== 'string' || !/^0x[0-9a-fA-F]+$/.test(signature)) throw new Error('The wallet returned no signature');
    return encodeBase64Json({
      x402Version: 2,
      resource: resource,
      accepted: accepted,
      payload: { authorization: authorization, signature: signature },
    });
  }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) {
      if (key === 'text') node.textContent = attrs[key];
      else node.setAttribute(key, attrs[key]);
    });
    (children || []).forEach(function (child) { if (child) node.appendChild(child); });
    return node;
  }

  function row(label, value, id) {
    return el('div', { class: 'x402-pay-row' }, [el('span', { class: 'x402-pay-label', text: label }), el('code', { id: id, text: value })]);
  }

  /** Shows the payment panel; resolves with {header: the PAYMENT-SIGNATURE value, payer}, or null when the person cancels. */
  function askToPay(required, method, url) {
    if (openPanel) openPanel.cancel();
    return new Promise(function (resolve) {
      var accepts = required.accepts.filter(function (a) { return a && a.scheme === 'exact' && chainIdOf(a.network) !== null; });
      var resource = required.resource || { url: url.href };
      var done = false;
      var connected = null;
      var backdrop = el('div', { class: 'x402-pay-backdrop', id: 'x402-pay' });
      var status = el('p', { class: 'x402-pay-status', id: 'x402-pay-status', role: 'status' });
      var source = el('select', { id: 'x402-pay-source' });
      var choice = el('select', { id: 'x402-pay-accept' });
      var connect = el('button', { type: 'button', class: 'btn', id: 'x402-pay-connect', text: 'Connect wallet' });
      var confirm = el('button', { type: 'button', class: 'btn execute', id: 'x402-pay-confirm', text: 'Pay' });
      var cancel = el('button', { type: 'button', class: 'btn', id: 'x402-pay-cancel', text: 'Cancel' });
      var details = el('div', { class: 'x402-pay-details' });
      var panel = el('div', { class: 'x402-pay-panel', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'x402-pay-title' }, [
        el('h3', { id: 'x402-pay-title', text: 'Payment required (x402)' }),
        el('p', { class: 'x402-pay-what', text: method + ' ' + url.pathname + url.search }),
        details,
        accepts.length > 1 ? el('label', { class: 'x402-pay-field', text: 'Pay with ' }, [choice]) : null,
        el('label', { class: 'x402-pay-field', text: 'Pay from ' }, [source]),
        el('div', { class: 'x402-pay-actions' }, [connect, confirm, cancel]),
        status,
      ]);
      backdrop.appendChild(panel);

      function say(text, isError) {
        status.textContent = text || '';
        status.className = 'x402-pay-status' + (isError ? ' x402-pay-error' : '');
      }
      function close(header) {
        if (done) return;
        done = true;
        document.removeEventListener('keydown', onKey, true);
        backdrop.remove();
        if (openPanel && openPanel.resolve === resolve) openPanel = null;
        resolve(header);
      }
      function onKey(event) {
        if (event.key === 'Escape') close(null);
      }
      openPanel = { cancel: function () { close(null); }, resolve: resolve };

      if (!accepts.length) {
        details.appendChild(el('p', { text: 'This page can pay the exact scheme on EVM chains only; the challenge offers none.' }));
        confirm.disabled = true;
        connect.hidden = true;
        source.disabled = true;
      }
      accepts.forEach(function (a, i) {
        choice.appendChild(el('option', { value: String(i), text: a.scheme + ' · ' + a.network + ' · ' + a.amount }));
      });
      function selected() {
        return accepts[Number(choice.value) || 0];
      }
      function showDetails() {
        var accepted = selected();
        if (!accepted) return;
        var chainId = chainIdOf(accepted.network);
        var p = price(accepted, networkInfo);
        details.textContent = '';
        details.appendChild(row('Amount', p.text, 'x402-pay-amount'));
        details.appendChild(row('Pay to', accepted.payTo, 'x402-pay-payto'));
        details.appendChild(row('Chain', (CHAINS[chainId] || 'chain') + ' · ' + accepted.network, 'x402-pay-network'));
        details.appendChild(row('Token', accepted.asset, 'x402-pay-asset'));
        if (networkInfo && networkInfo.dev_chain) details.appendChild(el('p', { class: 'x402-pay-note', text: 'Embedded dev chain: test USDC only.' }));
        confirm.textContent = 'Pay ' + p.text;
      }
      function sourceKind() {
        return source.value.indexOf('demo:') === 0 ? 'demo' : source.value === 'wallet' ? 'wallet' : 'none';
      }
      function refreshButtons() {
        var kind = sourceKind();
        connect.hidden = kind !== 'wallet' || !!connected;
        confirm.disabled = !accepts.length || kind === 'none' || (kind === 'wallet' && !connected);
      }
      choice.addEventListener('change', showDetails);
      source.addEventListener('change', function () { say(''); refreshButtons(); });
      cancel.addEventListener('click', function () { close(null); });
      backdrop.addEventListener('click', function (event) { if (event.target === backdrop) close(null); });
      document.addEventListener('keydown', onKey, true);

      connect.addEventListener('click', async function () {
        connect.disabled = true;
        say('Waiting for the wallet…');
        try {
          connected = await connectBrowserWallet();
          var option = source.querySelector('option[value="wallet"]');
          if (option) option.textContent = 'Browser wallet · ' + connected;
          say('Connected ' + connected + '. Check the amount, then pay.');
        } catch (err) {
          say(errorMessage(err), true);
        }
        connect.disabled = false;
        refreshButtons();
      });

      confirm.addEventListener('click', async function () {
        var accepted = selected();
        var kind = sourceKind();
        confirm.disabled = true;
        source.disabled = true;
        say(kind === 'wallet' ? 'Sign the authorization in your wallet…' : 'Signing…');
        try {
          var signed = kind === 'demo'
            ? await signWithDemoWallet(Number(source.value.slice(5)), accepted, resource)
            : { header: await signWithBrowserWallet(connected, accepted, resource), payer: connected };
          say('Signed: sending the request again with PAYMENT-SIGNATURE…');
          close(signed);
        } catch (err) {
          say(errorMessage(err), true);
          source.disabled = false;
          refreshButtons();
        }
      });

      source.appendChild(el('option', { value: '', text: 'Looking for wallets…' }));
      source.disabled = true;
      document.body.appendChild(backdrop);
      showDetails();
      refreshButtons();

      network().then(function (info) { return demoWallets(info); }).then(function (wallets) {
        if (done) return;
        source.textContent = '';
        (wallets || []).forEach(function (w) {
          var balance = w.usdc_balance !== null && w.usdc_balance !== undefined ? ' · ' + formatUnits(w.usdc_balance, networkInfo && networkInfo.usdc ? networkInfo.usdc.decimals : 6) + ' USDC' : '';
          source.appendChild(el('option', { value: 'demo:' + w.index, text: 'Demo wallet (anvil account ' + w.index + ') · ' + shortAddress(w.address) + balance }));
        });
        if (browserWallet()) source.appendChild(el('option', { value: 'wallet', text: 'Browser wallet (EIP-1193)' }));
        if (!source.options.length) {
          source.appendChild(el('option', { value: '', text: 'No wallet found' }));
          say('No wallet to pay with: connect a browser wallet (EIP-1193, e.g. an extension) and try again.', true);
        } else {
          source.disabled = !accepts.length;
        }
        showDetails();
        refreshButtons();
        (confirm.disabled ? connect : confirm).focus();
      });
    });
  }

  /** A short note of what was paid: the settlement transaction (PAYMENT-RESPONSE), or that the payment was accepted and settles later. */
  function showReceipt(response, payer) {
    if (!response.ok) return; // refused: Swagger UI shows the answer
    var settled = null;
    var header = response.headers.get('payment-response');
    try {
      settled = header ? decodeBase64Json(header) : null;
    } catch (e) {
      settled = null;
    }
    var detail = settled && settled.transaction ? ' · tx ' + settled.transaction : ' · accepted; settlement pending';
    var note = el('div', { class: 'x402-pay-toast', id: 'x402-pay-receipt', role: 'status' }, [
      el('strong', { text: 'Paid' }),
      el('span', { text: ' from ' + ((settled && settled.payer) || payer) + detail }),
    ]);
    var old = document.getElementById('x402-pay-receipt');
    if (old) old.remove();
    document.body.appendChild(note);
    setTimeout(function () { note.remove(); }, 15000);
  }

  window.fetch = async function (input, init) {
    var retryInput = typeof Request !== 'undefined' && input instanceof Request ? input.clone() : input;
    var response = await originalFetch(input, init);
    if (response.status !== 402) return response;
    var challenge = response.headers.get('payment-required');
    var url = requestUrl(input);
    if (!challenge || !url || url.origin !== window.location.origin) return response;
    var headers = requestHeaders(input, init);
    if (headers.has('payment-signature')) return response; // a payment was sent and refused: show that answer
    var required;
    try {
      required = decodeBase64Json(challenge);
    } catch (e) {
      return response;
    }
    if (!required || required.x402Version !== 2 || !Array.isArray(required.accepts)) return response;
    var method = String((init && init.method) || (input && input.method) || 'GET').toUpperCase();
    var payment = await askToPay(required, method, url);
    if (!payment) return response;
    headers.set('PAYMENT-SIGNATURE', payment.header);
    var paid = await originalFetch(retryInput, Object.assign({}, init || {}, { headers: headers }));
    showReceipt(paid, payment.payer);
    return paid;
  };
})();
`;

const css = `
.x402-pay-backdrop { position: fixed; inset: 0; background: rgba(0, 0, 0, 0.45); display: flex; align-items: center; justify-content: center; z-index: 10000; }
.x402-pay-panel { background: #fff; color: #3b4151; font-family: sans-serif; border-radius: 6px; padding: 20px 24px; width: min(560px, 92vw); box-shadow: 0 8px 32px rgba(0, 0, 0, 0.3); }
.x402-pay-panel h3 { margin: 0 0 6px; font-size: 18px; }
.x402-pay-what { margin: 0 0 12px; font-family: monospace; word-break: break-all; }
.x402-pay-row { display: flex; gap: 10px; margin: 4px 0; align-items: baseline; }
.x402-pay-label { width: 70px; flex: none; font-weight: bold; }
.x402-pay-row code { word-break: break-all; }
.x402-pay-note { font-size: 12px; color: #666; margin: 6px 0 0; }
.x402-pay-field { display: block; margin: 12px 0 0; font-weight: bold; }
.x402-pay-field select { display: block; width: 100%; margin-top: 4px; font-weight: normal; }
.x402-pay-actions { display: flex; gap: 8px; margin-top: 16px; }
.x402-pay-actions button { font-size: 14px; font-weight: bold; padding: 6px 18px; border-radius: 4px; border: 2px solid #41444e; background: #fff; color: #3b4151; cursor: pointer; }
.x402-pay-actions button.execute { background: #4990e2; border-color: #4990e2; color: #fff; }
.x402-pay-actions button:disabled { opacity: 0.45; cursor: not-allowed; }
.x402-pay-actions button[hidden] { display: none; }
.x402-pay-status { min-height: 1.2em; margin: 10px 0 0; font-size: 13px; word-break: break-word; }
.x402-pay-error { color: #b00020; }
.x402-pay-toast { position: fixed; right: 16px; bottom: 16px; background: #1b5e20; color: #fff; padding: 10px 14px; border-radius: 4px; font-family: sans-serif; font-size: 13px; max-width: 80vw; word-break: break-all; z-index: 10001; }
`;

/** The `theme` option of @fastify/swagger-ui that adds the payment panel to /docs. */
export const swaggerPayTheme = {
  js: [{ filename: 'swagger-pay.js', content: script }],
  css: [{ filename: 'swagger-pay.css', content: css }],
};

/** The browser script itself (tests check it parses). */
export const swaggerPayScript = script;
