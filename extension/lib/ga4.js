// GA4 e-commerce events (as pushed to dataLayer or sent with gtag) → signal
// items. Reference: GA4 "Measure ecommerce" event parameters (items[] with
// item_id, item_name, price, quantity, item_category … item_category5).

import { joinCategory, makeItem, toCurrency, LIMITS } from './signals.js';
import { categoryForItem } from './jsonld.js';

export const CART_EVENTS = new Set(['add_to_cart', 'remove_from_cart', 'view_cart', 'begin_checkout']);
/** Events that carry the whole cart, which then replaces the stored one. */
export const FULL_CART_EVENTS = new Set(['view_cart', 'begin_checkout']);
export const PURCHASE_EVENT = 'purchase';

/** The GA4 taxonomy path of an item: item_category … item_category5 joined by " > ". */
export function ga4Category(item) {
  return joinCategory([
    item.item_category,
    item.item_category2,
    item.item_category3,
    item.item_category4,
    item.item_category5,
  ]);
}

/**
 * Items of a GA4 ecommerce object, normalised; unusable items are skipped.
 * `products` (from the page's JSON-LD) fills in categories GA4 left out.
 */
export function ga4Items(ecommerce, products = []) {
  const raw = Array.isArray(ecommerce?.items) ? ecommerce.items.slice(0, LIMITS.items) : [];
  const out = [];
  for (const it of raw) {
    if (!it || typeof it !== 'object') continue;
    const name = it.item_name ?? it.item_id;
    const sku = it.item_id;
    let category = ga4Category(it);
    if (!category) category = categoryForItem(products, { name, sku });
    const item = makeItem({ name, sku, category, price: it.price, quantity: it.quantity });
    if (item) out.push(item);
  }
  return out;
}

/** The event's currency: ecommerce.currency, else the first item's. */
export function ga4Currency(ecommerce) {
  const first = Array.isArray(ecommerce?.items) ? ecommerce.items[0] : undefined;
  return toCurrency(ecommerce?.currency) ?? toCurrency(first?.currency);
}
