// One call's inbox as a queue its reader can wait on with a deadline: the reader must wake up
// for a resend or a resume when nothing arrives, which `for await` over a subscription cannot.

/** What `next` resolves to when nothing arrived in time. */
export const TIMED_OUT = Symbol("timed out");

/** Put on every open call's queue when the NATS connection is back: replies may be lost. */
export const RECONNECTED = Symbol("reconnected");

export class ReplyQueue {
  constructor() {
    this.items = [];
    this.waiter = null;
  }

  push(item) {
    if (this.waiter) {
      const wake = this.waiter;
      this.waiter = null;
      wake(item);
    } else {
      this.items.push(item);
    }
  }

  /** The next item, or `TIMED_OUT` after `ms` milliseconds. */
  next(ms) {
    if (this.items.length) return Promise.resolve(this.items.shift());
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = null;
        resolve(TIMED_OUT);
      }, Math.max(0, ms));
      this.waiter = (item) => {
        clearTimeout(timer);
        resolve(item);
      };
    });
  }
}
