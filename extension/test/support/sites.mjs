// A local HTTP server that plays real search engines and shops, so the
// extension sees the URL shapes and page scripts it meets on the web. Chromium
// reaches it through --host-resolver-rules (see `resolverRules`).

import http from 'node:http';

// Only names outside Chromium's HSTS preload list: preloaded ones (bing.com,
// amazon.de, …) are upgraded to https and never reach this plain-HTTP server.
export const ENGINE_HOSTS = ['www.google.com', 'www.google.co.uk', 'duckduckgo.com'];
// www.shop.example is the same shop under another host name, as many shops have.
export const SHOP_HOSTS = ['shop.example', 'www.shop.example', 'store.example', 'quiet.example'];

const page = (title, head, body) => `<!doctype html>
<html><head><meta charset="utf-8"><title>${title}</title>${head}</head>
<body>${body}</body></html>`;

// The standard GA4 snippet: gtag() pushes its `arguments` object.
const GTAG = `<script>
window.dataLayer = window.dataLayer || [];
function gtag(){ dataLayer.push(arguments); }
gtag('js', new Date());
gtag('config', 'G-TEST');
</script>`;

// What a tag manager does: replace dataLayer.push with a function that calls
// the push it found, twice over (two containers on one page).
const TAG_MANAGER = `<script>
window.dataLayer = window.dataLayer || [];
for (let n = 0; n < 2; n++) {
  const previous = window.dataLayer.push;
  window.dataLayer.push = function () {
    const r = previous.apply(window.dataLayer, arguments);
    for (const e of arguments) if (e && typeof e.eventCallback === 'function') e.eventCallback();
    return r;
  };
}
</script>`;

const ld = (obj) => `<script type="application/ld+json">${JSON.stringify(obj)}</script>`;

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function route(host, url) {
  const q = url.searchParams;
  switch (host) {
    case 'www.google.com':
    case 'www.google.co.uk':
      return page(`${esc(q.get('q') ?? '')} - Search`, '', `<h1>Results for ${esc(q.get('q') ?? '')}</h1><a id="next" href="/search?q=${encodeURIComponent(q.get('q') ?? '')}&start=10">next</a>`);
    case 'duckduckgo.com':
      // A single-page engine: later searches replace the results and the URL
      // with history.pushState, without a navigation.
      return page(
        'DuckDuckGo',
        `<script>
function search(term) {
  history.pushState({ term }, '', '/?q=' + encodeURIComponent(term).replace(/%20/g, '+') + '&ia=web');
  document.getElementById('results').textContent = 'Results for ' + term;
}
</script>`,
        `<form onsubmit="search(this.q.value); return false"><input name="q" id="q"><button id="go">Search</button></form><div id="results">${esc(q.get('q') ?? '')}</div>`,
      );
    case 'shop.example':
    case 'www.shop.example':
    case 'quiet.example':
      return shop(url);
    case 'store.example':
      return store(url);
    default:
      return null;
  }
}

function shop(url) {
  const p = url.pathname;
  if (p === '/product/trail-runner') {
    // GA4 through gtag; the item has no item_category, the JSON-LD Product has one.
    return page(
      'Trail Runner',
      GTAG +
        ld({ '@context': 'https://schema.org', '@type': 'Product', name: 'Trail Runner', sku: 'TR-1', category: 'Apparel & Accessories > Shoes', offers: { '@type': 'Offer', price: '59.90', priceCurrency: 'EUR' } }),
      `<h1>Trail Runner</h1><button id="add" onclick="gtag('event', 'add_to_cart', { currency: 'EUR', value: 59.9, items: [{ item_id: 'TR-1', item_name: 'Trail Runner', price: 59.9, quantity: 1 }] })">Add to cart</button>`,
    );
  }
  if (p === '/product/socks') {
    // dataLayer.push behind two tag-manager overrides, with a callback function
    // and a DOM node in the event (neither can be cloned by postMessage).
    return page(
      'Wool Socks',
      TAG_MANAGER,
      `<h1>Wool Socks</h1><button id="add" onclick="dataLayer.push({ ecommerce: null }); dataLayer.push({ event: 'add_to_cart', eventCallback: function () { window.called = (window.called || 0) + 1; }, 'gtm.element': this, ecommerce: { currency: 'EUR', value: 15, items: [{ item_id: 'WS-2', item_name: 'Wool Socks', price: '7.50', quantity: 2, item_category: 'Apparel & Accessories', item_category2: 'Socks' }] } })">Add two</button>
<button id="remove" onclick="dataLayer.push({ event: 'remove_from_cart', ecommerce: { currency: 'EUR', items: [{ item_id: 'WS-2', item_name: 'Wool Socks', price: 7.5, quantity: 1 }] } })">Remove one</button>`,
    );
  }
  if (p === '/cart') {
    // The page assigns a fresh array to window.dataLayer after loading, with
    // the event already in it (the backlog).
    return page(
      'Cart',
      '',
      `<h1>Cart</h1><script>
setTimeout(function () {
  window.dataLayer = [{ event: 'view_cart', ecommerce: { currency: 'EUR', value: 74.9, items: [
    { item_id: 'TR-1', item_name: 'Trail Runner', price: 59.9, quantity: 1, item_category: 'Apparel & Accessories', item_category2: 'Shoes' },
    { item_id: 'WS-2', item_name: 'Wool Socks', price: 7.5, quantity: 2, item_category: 'Apparel & Accessories', item_category2: 'Socks' }
  ] } }];
}, 50);
</script>`,
    );
  }
  if (p === '/checkout/done') {
    // The order as GA4 purchase and as JSON-LD: one purchase must be stored.
    const order = q(url, 'order', 'A-1001');
    const items = [
      { item_id: 'TR-1', item_name: 'Trail Runner', price: 59.9, quantity: 1, item_category: 'Apparel & Accessories', item_category2: 'Shoes' },
      { item_id: 'WS-2', item_name: 'Wool Socks', price: 7.5, quantity: 2, item_category: 'Apparel & Accessories', item_category2: 'Socks' },
    ];
    return page(
      'Thank you',
      GTAG +
        ld({
          '@context': 'https://schema.org',
          '@type': 'Order',
          orderNumber: order,
          priceCurrency: 'EUR',
          price: '74.90',
          acceptedOffer: items.map((i) => ({ '@type': 'Offer', price: String(i.price), priceCurrency: 'EUR', eligibleQuantity: { '@type': 'QuantitativeValue', value: i.quantity }, itemOffered: { '@type': 'Product', name: i.item_name, sku: i.item_id } })),
        }),
      `<h1>Thank you for order ${esc(order)}</h1><script>gtag('event', 'purchase', ${JSON.stringify({ transaction_id: order, value: 74.9, currency: 'EUR', shipping: 0, items })});</script>`,
    );
  }
  if (p === '/') return page('Shop', '', '<h1>Shop</h1>');
  return null;
}

function store(url) {
  if (url.pathname === '/thanks') {
    // No analytics at all: the order is only in JSON-LD, inside an @graph.
    const order = q(url, 'order', 'S-77');
    return page(
      'Order confirmed',
      ld({
        '@context': 'https://schema.org',
        '@graph': [
          { '@type': 'WebPage', name: 'Order confirmed' },
          {
            '@type': 'Order',
            orderNumber: order,
            totalPaymentDue: { '@type': 'PriceSpecification', price: 24.5, priceCurrency: 'GBP' },
            orderedItem: [
              { '@type': 'OrderItem', orderQuantity: 1, orderedItem: { '@type': 'Product', name: 'Ceramic Mug', sku: 'MUG-9', category: 'Home & Garden > Kitchen & Dining', offers: { '@type': 'Offer', price: 24.5, priceCurrency: 'GBP' } } },
            ],
          },
        ],
      }),
      `<h1>Order ${esc(order)} confirmed</h1>`,
    );
  }
  if (url.pathname === '/') return page('Store', '', '<h1>Store</h1>');
  return null;
}

function q(url, name, fallback) {
  return url.searchParams.get(name) ?? fallback;
}

/**
 * Starts the server on 127.0.0.1 with an ephemeral port. It routes by the Host
 * header, so it also works as a browser's HTTP proxy (absolute request URLs).
 * `extra(req, res, host, url)` may answer a request first (it returns true
 * when it did): tests add their own routes with it.
 */
export async function startSites({ extra } = {}) {
  const server = http.createServer((req, res) => {
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    const url = new URL(req.url, `http://${host}`);
    if (extra?.(req, res, host, url)) return;
    const html = route(host, url);
    if (html === null) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(html);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const port = server.address().port;
  const resolverRules = [...ENGINE_HOSTS, ...SHOP_HOSTS].map((h) => `MAP ${h} 127.0.0.1:${port}`).join(', ');
  return { server, port, resolverRules, close: () => new Promise((r) => server.close(r)) };
}
