// schema.org JSON-LD (script[type="application/ld+json"]) → products with
// categories and orders. Pages nest nodes freely (@graph, arrays, mainEntity),
// so every object with an @type is considered, within fixed bounds.

import { clipPageText, joinCategory, makeItem, toCurrency, toQuantity, LIMITS } from './signals.js';

const MAX_NODES = 2000;
const MAX_DEPTH = 12;

/** Types of a node with any schema.org prefix removed. */
export function typesOf(node) {
  const t = node?.['@type'];
  const list = Array.isArray(t) ? t : [t];
  return list
    .filter((x) => typeof x === 'string')
    .map((x) => x.replace(/^(https?:\/\/schema\.org\/|schema:)/, ''));
}

const isType = (node, type) => typesOf(node).includes(type);

/** Every object with an @type in the parsed JSON-LD blocks, depth first. */
export function flattenNodes(blocks) {
  const out = [];
  const walk = (v, depth) => {
    if (out.length >= MAX_NODES || depth > MAX_DEPTH || v === null || typeof v !== 'object') return;
    if (Array.isArray(v)) {
      for (const x of v) walk(x, depth + 1);
      return;
    }
    if (v['@type'] !== undefined) out.push(v);
    for (const [k, x] of Object.entries(v)) {
      if (k !== '@context') walk(x, depth + 1);
    }
  };
  walk(blocks, 0);
  return out;
}

const first = (v) => (Array.isArray(v) ? v[0] : v);
const asList = (v) => (v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]);

/**
 * A taxonomy path from Product.category: a text ("Shoes" or "Apparel > Shoes"),
 * a Thing/CategoryCode with a name, or a list of those (the first usable one).
 * URLs and bare numbers (taxonomy ids) are not readable paths and are skipped.
 */
export function ldCategory(value) {
  for (const v of asList(value)) {
    if (typeof v === 'string') {
      const s = v.trim();
      if (s && !/^https?:\/\//i.test(s) && !/^\d+$/.test(s)) return clipPageText(s, LIMITS.category);
    } else if (v && typeof v === 'object' && typeof v.name === 'string') {
      const c = joinCategory([v.name]);
      if (c) return c;
    }
  }
  return '';
}

const text = (v) => {
  v = first(v);
  if (typeof v === 'string' || typeof v === 'number') return String(v);
  if (v && typeof v === 'object' && typeof v['@value'] === 'string') return v['@value'];
  return undefined;
};

function productInfo(p) {
  return {
    name: text(p.name),
    sku: text(p.sku) ?? text(p.productID) ?? text(p.gtin13) ?? text(p.gtin),
    category: ldCategory(p.category),
  };
}

/** Products on the page that name a category. */
export function productsFrom(nodes) {
  return nodes.filter((n) => isType(n, 'Product')).map(productInfo).filter((p) => p.category);
}

/**
 * Category for a GA4 item from the page's products: same sku, else same name
 * (case-insensitive), else the page's only product. '' when none fits.
 */
export function categoryForItem(products, { name, sku }) {
  if (!products.length) return '';
  const s = sku === undefined || sku === null ? '' : String(sku);
  const bySku = s && products.find((p) => p.sku === s);
  if (bySku) return bySku.category;
  const n = typeof name === 'string' ? name.trim().toLowerCase() : '';
  const byName = n && products.find((p) => p.name && p.name.trim().toLowerCase() === n);
  if (byName) return byName.category;
  return products.length === 1 ? products[0].category : '';
}

// A price and currency from an Offer / PriceSpecification / MonetaryAmount.
function priceOf(v) {
  v = first(v);
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object') return { price: v };
  const spec = first(v.priceSpecification);
  return {
    price: v.price ?? v.value ?? spec?.price,
    currency: text(v.priceCurrency) ?? text(v.currency) ?? text(spec?.priceCurrency),
  };
}

/** Orders on the page: {orderId, currency, total, items}. */
export function ordersFrom(nodes) {
  const orders = [];
  for (const o of nodes.filter((n) => isType(n, 'Order'))) {
    const items = [];
    let currency = toCurrency(text(o.priceCurrency));
    const offers = asList(o.acceptedOffer);
    if (offers.length) {
      // Offer: price, priceCurrency, itemOffered (Product), eligibleQuantity.
      for (const off of offers.slice(0, LIMITS.items)) {
        if (!off || typeof off !== 'object') continue;
        const pr = priceOf(off);
        currency ??= toCurrency(pr.currency);
        const prod = first(off.itemOffered) ?? {};
        const info = typeof prod === 'object' ? productInfo(prod) : { name: text(prod) };
        const qty = first(off.eligibleQuantity);
        const item = makeItem({ ...info, price: pr.price, quantity: toQuantity(qty?.value ?? qty) ?? 1 });
        if (item) items.push(item);
      }
    } else {
      // orderedItem: OrderItem {orderQuantity, orderedItem: Product} or a Product.
      for (const oi of asList(o.orderedItem).slice(0, LIMITS.items)) {
        if (!oi || typeof oi !== 'object') continue;
        const isOrderItem = isType(oi, 'OrderItem');
        const prod = isOrderItem ? first(oi.orderedItem) ?? {} : oi;
        if (typeof prod !== 'object') continue;
        const pr = priceOf(prod.offers ?? oi.price ?? prod.price);
        currency ??= toCurrency(pr.currency);
        const quantity = isOrderItem ? text(oi.orderQuantity?.value ?? oi.orderQuantity) : undefined;
        const item = makeItem({ ...productInfo(prod), price: pr.price, quantity });
        if (item) items.push(item);
      }
    }
    const due = priceOf(o.totalPaymentDue);
    currency = toCurrency(text(o.priceCurrency)) ?? toCurrency(due.currency) ?? currency;
    orders.push({
      orderId: text(o.orderNumber) ?? text(o.confirmationNumber),
      currency,
      total: due.price ?? o.price,
      items,
    });
  }
  return orders;
}
